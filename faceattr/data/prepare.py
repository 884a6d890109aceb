"""`faceattr prepare PHOTOS --out DATASET_DIR`: detect faces (MTCNN), write every model's crops + manifests.

Layout written (all crops cut by `regions.crop_region` from the ORIGINAL photo, i.e. exactly the pixels
the served model sees after `faces.find_regions(image)` -> `crop_region(image, region, box)`):

    DATASET_DIR/photo/labels.csv  + photo/<sha>.png  whole photo 120x120, image_region=photo, boxes rescaled
                                                     (each eye's box too: region `eye` trains from here)
    DATASET_DIR/face/labels.csv   + face/<sha>.png   60x60 face crops, image_region=face
    DATASET_DIR/eyes/labels.csv   + eyes/<sha>.png   32x60 eye bands, image_region=eyes
    DATASET_DIR/mouth/labels.csv  + mouth/<sha>.png  60x60 mouth crops, image_region=mouth (lips/ alike)
    (the crop manifests' `cut_by` column says `faceattr` for crops cut here from a whole photo)
    DATASET_DIR/detections.csv    every input: status, reason, confidence, boxes in original pixels
    DATASET_DIR/report.json, DATASET_DIR/failures.csv   counts, and each failed file with its reason

Why ready crops per region (not only a 120x120 photo + boxes): cropping from the original keeps the eye
and mouth detail of large photos (a 4000 px phone photo shrunk to 120 px leaves a face of ~12 px), and
training then reads small, ready crops. `faceattr train eyes --data DATASET_DIR` (and
`mlflow run . -e eyes -P data=DATASET_DIR`) picks `DATASET_DIR/eyes/labels.csv` by the experiment's region.
`photo/labels.csv` is additionally a synthetic-style manifest (whole photo + boxes) for any region.

Detections are cached by file content (sha1 -> JSON) so a second run is near instant.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from faceattr.data import faces
from faceattr.data.cache import cache_root, write_atomic
from faceattr.data.manifest import BOX_COLUMNS, IMAGE_SUFFIXES, read_manifest
from faceattr.data.regions import REGION_SIZES, crop_region, load_rgb, parse_box
from faceattr.errors import DataError

EXIT_TOO_MANY_FAILURES = 3     # distinct from 2 (a user error: bad arguments, unreadable manifest)
DETECT_REGIONS = ("face", "eyes", "mouth", "lips")   # one crop a photo; `eye` (two) trains from photo/
REASONS = ("unreadable", "no face", "several faces")
CHUNK = 16                     # photos per detection batch / per work item


@dataclass
class Report:
    total: int = 0
    ok: int = 0
    cached: int = 0
    failures: list[dict] = field(default_factory=list)   # {"path", "reason", "detail"}
    seconds: float = 0.0
    out: str = ""

    @property
    def failure_share(self) -> float:
        return len(self.failures) / self.total if self.total else 0.0

    def counts(self) -> dict[str, int]:
        out = {"total": self.total, "ok": self.ok, "failed": len(self.failures), "cached": self.cached}
        for reason in REASONS:
            out[reason.replace(" ", "_")] = sum(f["reason"] == reason for f in self.failures)
        return out


def default_cache_dir() -> Path:
    return cache_root() / "detections"


def read_inputs(source, image_region: str | None = None) -> pd.DataFrame:
    """A labels CSV, a folder with labels.csv, or a folder of photos (searched recursively, no labels)."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "labels.csv").is_file():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no labels.csv and no images ({'/'.join(IMAGE_SUFFIXES)}) in this folder")
        df = pd.DataFrame({"path": [str(p.resolve()) for p in files]})
        df["image_region"] = image_region or "photo"
        return df
    csv_path = path / "labels.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise DataError(f"{source}: not a labels CSV, nor a folder of photos")
    df = read_manifest(csv_path, image_region=image_region)
    return df.drop(columns=["row", *[c for c in BOX_COLUMNS if c in df.columns]])


def prepare(source, out, *, image_region: str | None = None, cache_dir=None, max_failure_share: float = 0.1,
            workers: int = 1, progress: bool = True) -> Report:
    """Detect, crop and write DATASET_DIR; returns the Report (also written to DATASET_DIR/report.json).
    Logging it to MLflow is the caller's (`faceattr prepare`: cli.log_prepare): faceattr.data never tracks."""
    if image_region is not None and image_region not in REGION_SIZES:
        raise DataError(f"--image-region {image_region!r} is not one of {', '.join(REGION_SIZES)}")
    if not max_failure_share >= 0:  # above 1: never fail on the share
        raise DataError(f"--max-failure-share must be >= 0, got {max_failure_share}")
    started = time.perf_counter()
    frame = read_inputs(source, image_region)
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache = cache / f"{faces.DETECTOR}-{faces.MAX_SIDE}"
    items = [(i, row["path"], row["image_region"]) for i, row in frame.iterrows()]
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    results: dict[int, dict] = {}
    bar = _progress(len(items), progress)
    try:
        if workers > 1 and len(chunks) > 1:
            with ProcessPoolExecutor(workers, initializer=faces.one_tf_thread) as pool:
                for done in pool.map(_process_chunk, chunks, [str(out)] * len(chunks), [str(cache)] * len(chunks)):
                    results.update(done)
                    bar.update(len(done))
        else:
            for chunk in chunks:
                done = _process_chunk(chunk, str(out), str(cache))
                results.update(done)
                bar.update(len(done))
    finally:
        bar.close()

    report = Report(total=len(items), out=str(out))
    records = []
    for i, row in frame.iterrows():
        result = results[i]
        records.append({**row.to_dict(), **result})
        report.cached += bool(result.get("cached"))
        if result["status"] == "ok":
            report.ok += 1
        else:
            report.failures.append({"path": row["path"], "reason": result["status"], "detail": result["detail"]})
    report.seconds = time.perf_counter() - started
    _write_outputs(out, frame, pd.DataFrame.from_records(records), report)
    return report


# --- work on one chunk (runs in a worker process when workers > 1) ---------------------------------


def _process_chunk(chunk, out: str, cache: str) -> dict[int, dict]:
    out_dir, cache_dir = Path(out), Path(cache)
    results: dict[int, dict] = {}
    loaded = []  # (index, image, sha1, region) decoded fine
    for index, path, region in chunk:
        try:
            with open(path, "rb") as fh:
                content = fh.read()
        except OSError as exc:
            results[index] = _fail("unreadable", f"cannot read file ({exc.strerror or exc})")
            continue
        sha1 = hashlib.sha1(content).hexdigest()
        try:
            image = load_rgb(content)
        except DataError as exc:
            results[index] = _fail("unreadable", str(exc).removeprefix("<bytes>: "), sha1)
            continue
        loaded.append((index, image, sha1, region))

    photos = {sha1: image for _, image, sha1, region in loaded if region == "photo"}
    detections = dict(zip(photos, faces.detect_photos(list(photos.values()), list(photos), cache_dir)))

    for index, image, sha1, region in loaded:
        name = f"{sha1[:20]}.png"
        if region != "photo":  # already a crop: resize to the region's size, no detection
            _save(crop_region(image, region), out_dir / region / name)
            results[index] = {"status": "ok", "detail": "", "sha1": sha1, "file": name, "region": region}
            continue
        detection = detections[sha1]
        if "error" in detection:
            results[index] = _fail("no face", detection["error"], sha1)
            continue
        try:
            face = faces.choose_face(detection)
        except (faces.NoFace, faces.SeveralFaces) as exc:
            results[index] = {**_fail(exc.reason, str(exc), sha1), "faces": len(detection["faces"]),
                              "cached": detection.get("cached", False)}
            continue
        boxes = faces.region_boxes(face)
        for r in DETECT_REGIONS:
            _save(crop_region(image, r, boxes[f"{r}_box"]), out_dir / r / name)
        _save(crop_region(image, "photo"), out_dir / "photo" / name)
        sx, sy = REGION_SIZES["photo"][1] / image.width, REGION_SIZES["photo"][0] / image.height
        photo_boxes = {k: _scale_box(v, sx, sy) for k, v in boxes.items()}
        results[index] = {"status": "ok", "detail": "", "sha1": sha1, "file": name, "region": "photo",
                          "faces": len(detection["faces"]), "confidence": round(face["confidence"], 4),
                          "cached": detection.get("cached", False), **boxes,
                          **{f"photo_{k}": v for k, v in photo_boxes.items()}}
    return results


def _fail(reason: str, detail: str, sha1: str = "") -> dict:
    return {"status": reason, "detail": detail, "sha1": sha1}


def _save(array, path: Path) -> None:
    if not path.exists():  # named by content: an existing file already holds these pixels
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        write_atomic(path, buffer.getvalue())


def _scale_box(text: str, sx: float, sy: float) -> str:
    x0, y0, x1, y1 = parse_box(text)
    return f"{x0 * sx:.2f} {y0 * sy:.2f} {x1 * sx:.2f} {y1 * sy:.2f}"


# --- outputs ---------------------------------------------------------------------------------------


def _write_outputs(out: Path, frame: pd.DataFrame, records: pd.DataFrame, report: Report) -> None:
    labels = [c for c in frame.columns if c not in ("path", "image_region")]
    records = records.rename(columns={"path": "source"})
    for column in ("region", "file", "faces", "confidence", *BOX_COLUMNS, *(f"photo_{b}" for b in BOX_COLUMNS)):
        if column not in records.columns:  # e.g. every photo failed
            records[column] = None
    ok = records[records["status"] == "ok"]
    for region in REGION_SIZES:   # `eye` (two cuts a photo) trains from photo/labels.csv's boxes
        rows = ok[(ok["region"] == region) | ((ok["region"] == "photo") & (region in DETECT_REGIONS))]
        target = out / region / "labels.csv"
        if rows.empty:
            target.unlink(missing_ok=True)
            continue
        table = pd.DataFrame({"path": [f"{f}" for f in rows["file"]]}, index=rows.index)
        for column in labels:
            table[column] = rows[column]
        table["image_region"] = region
        if region == "photo":
            for box in BOX_COLUMNS:
                table[box] = rows[f"photo_{box}"]
        else:   # crops this code cut from photos: a model trained on them may be served whole photos
            table["cut_by"] = ["faceattr" if r == "photo" else "" for r in rows["region"]]
        table["source"] = rows["source"]
        table.to_csv(target, index=False)
    keep = ["source", "sha1", "status", "detail", "faces", "confidence", *BOX_COLUMNS, *labels]
    records.reindex(columns=keep).to_csv(out / "detections.csv", index=False)
    pd.DataFrame(report.failures, columns=["path", "reason", "detail"]).to_csv(out / "failures.csv", index=False)
    summary = {**report.counts(), "failure_share": round(report.failure_share, 4),
               "seconds": round(report.seconds, 2),
               "photos_per_second": round(report.total / report.seconds, 2) if report.seconds else None,
               "detector": faces.DETECTOR, "max_side": faces.MAX_SIDE, "min_confidence": faces.MIN_CONFIDENCE,
               "several_faces_policy": f"the largest face when >= {faces.SUBJECT_AREA_RATIO}x the next, else the one face "
                                               f"over the photo's centre (not under 1/{faces.SUBJECT_AREA_RATIO:g} of the "
                                               f"largest); else rejected (data/faces.choose_face)"}
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", desc="prepare", disable=not enabled, smoothing=0.1)
