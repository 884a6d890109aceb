"""dlib's pretrained 128-d face descriptor (ResNet, 99.38% on LFW), computed offline and cached by file content.

Same person: Euclidean distance below 0.6 (dlib's threshold). All three dlib models come from the
`face_recognition_models` package (dlib's .dat files), run by `dlib` (the `dlib-bin` wheel): nothing is
downloaded at run time. One face takes three steps:

1. find: a face box says where to look (a manifest's `face_box`, MTCNN's box as `faceattr prepare` finds
   it, or the whole image for a ready face crop); dlib's own frontal face detector (HOG) then finds the
   face inside it. Why: the 5-point landmark model was trained on that detector's boxes. Given the whole
   92x112 ORL photo instead, 12% of same-person pairs ended above 0.6; given the detector's box, none
   did. The detector is also what says "no face" for noise, a blank image or an eye crop: the landmark
   model and the network return a descriptor for anything.
2. align: 5 landmarks -> `dlib.get_face_chip` (upright, 150x150, padding 0.25): the network's training input.
3. describe: the network -> 128 floats.

Cache: `$FACEATTR_CACHE/descriptors/<Alignment.key>/<sha1[:2]>/<sha1>-<box tag>.npy`, sha1 of the photo's
bytes; the box tag names the box used (`whole`, `box-<hash of its coordinates>`, `mtcnn-<hash of the
detector's settings>`). "no face"/"several faces" verdicts are cached too (`.json`), so a rerun or a
20-trial search neither embeds a photo twice nor starts MTCNN again. Each file is written to a temporary
name in the same folder and renamed into place: processes embedding the same photos at once are safe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceattr.data import faces
from faceattr.data.cache import by_content, cache_root, npy_bytes, write_atomic
from faceattr.data.regions import load_rgb, parse_box
from faceattr.errors import ConfigError, DataError, FaceattrError

DIMENSIONS = 128
INSTALL = "pip install dlib-bin face_recognition_models"
# dlib's detector counts a face above this score. Its default 0 missed 1.2% of the ORL faces (turned
# heads), -0.5 none; at -0.5 it still found nothing in noise, blank images and 99% of eye-state crops.
FACE_SCORE = -0.5
SEARCH_MARGIN = 0.25   # the detector also looks this share of the box beyond each side: boxes may be tight
SEARCH_SIDE = 200      # the box is scaled to this many pixels: a face then fills the detector's 80 px window


class Unreadable(DataError):
    reason = "unreadable"


class DescriptorFailed(DataError):
    reason = "descriptor failed"


@dataclass(frozen=True)
class Alignment:
    """How a face is cut out for the network; dlib's defaults for it. Any change gives a new cache folder."""

    chip_size: int = 150      # the network accepts 150x150 chips only
    padding: float = 0.25     # margin around the landmark template, share of its size
    num_jitters: int = 1      # >1: average over that many random jitters (slower, not deterministic)

    def __post_init__(self):
        if self.chip_size != 150:
            raise ConfigError(f"chip_size {self.chip_size}: dlib's face network takes 150x150 chips only")
        if not (self.padding >= 0 and isinstance(self.num_jitters, int) and self.num_jitters >= 1):
            raise ConfigError(f"padding must be >= 0 and num_jitters an integer >= 1, got {self}")

    @property
    def key(self) -> str:
        return f"dlib-resnet1-hog{FACE_SCORE:g}-c{self.chip_size}-p{self.padding:g}-j{self.num_jitters}"


ALIGNMENT = Alignment()


# --- dlib's models: loaded once per process -------------------------------------------------------


@dataclass(frozen=True)
class Models:
    dlib: Any
    detector: Any    # HOG frontal face detector
    landmarks: Any   # 5-point shape predictor
    network: Any     # face_recognition_model_v1


_load_lock = threading.Lock()
_run_lock = threading.Lock()   # dlib's network keeps its working buffers in the object: one face at a time
_models: Models | None = None


def models() -> Models:
    """dlib's detector, landmark model and network (~1 s and ~50 MB, once per process)."""
    global _models
    with _load_lock:
        if _models is None:
            _models = _load()
        return _models


def _load() -> Models:
    try:
        import dlib
        import face_recognition_models
    except ImportError as exc:
        raise FaceattrError(f"dlib's face descriptor needs the packages dlib-bin and face_recognition_models "
                            f"({exc}): {INSTALL}") from exc
    try:
        return Models(dlib, dlib.get_frontal_face_detector(),
                      dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location()),
                      dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location()))
    except RuntimeError as exc:  # a model file missing or damaged
        raise FaceattrError(f"dlib cannot load face_recognition_models' files ({exc}); reinstall: {INSTALL}") from exc


# --- one face --------------------------------------------------------------------------------------


def describe(image, box=None, settings: Alignment = ALIGNMENT) -> np.ndarray:
    """dlib's descriptor, float32 (128,), of the face in `box` of an RGB uint8 image (H, W, 3) at full resolution.

    box: "x0 y0 x1 y1" or 4 numbers in the image's pixels; None: the whole image is the face box (a face
    crop). Raises faces.NoFace (a DataError) when dlib finds no face there, DescriptorFailed when dlib fails.
    """
    image = _rgb_array(image)
    height, width = image.shape[:2]
    box = (0.0, 0.0, float(width), float(height)) if box is None else parse_box(box)
    m = models()
    with _run_lock:
        rect = _face_rect(m, image, box)
        try:
            shape = m.landmarks(image, rect)
            chip = m.dlib.get_face_chip(image, shape, size=settings.chip_size, padding=settings.padding)
            vector = m.network.compute_face_descriptor(chip, settings.num_jitters)
        except (RuntimeError, ValueError) as exc:  # dlib's C++ errors arrive as RuntimeError
            raise DescriptorFailed(f"dlib failed on the face ({exc})") from exc
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (DIMENSIONS,) or not np.isfinite(vector).all():
        raise DescriptorFailed(f"dlib returned {vector.shape} values, not {DIMENSIONS} finite numbers")
    return vector


def _rgb_array(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise DataError(f"expected an RGB uint8 image (H, W, 3), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)  # dlib reads the raw buffer


def _face_rect(m: Models, image: np.ndarray, box):
    """dlib's detector box of the face inside `box` (why: see the module docstring); NoFace when none."""
    x0, y0, x1, y1 = box
    height, width = image.shape[:2]
    bw, bh = x1 - x0, y1 - y0
    sx0, sy0 = max(0, math.floor(x0 - SEARCH_MARGIN * bw)), max(0, math.floor(y0 - SEARCH_MARGIN * bh))
    sx1, sy1 = min(width, math.ceil(x1 + SEARCH_MARGIN * bw)), min(height, math.ceil(y1 + SEARCH_MARGIN * bh))
    if sx1 - sx0 < 2 or sy1 - sy0 < 2:
        raise faces.NoFace(f"face box {x0:.1f} {y0:.1f} {x1:.1f} {y1:.1f} lies outside the {width}x{height} image")
    scale = SEARCH_SIDE / max(bw, bh)
    size = (max(1, round((sx1 - sx0) * scale)), max(1, round((sy1 - sy0) * scale)))
    region = Image.fromarray(image[sy0:sy1, sx0:sx1]).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    found, _scores, _ = m.detector.run(np.asarray(region), 0, FACE_SCORE)
    best, best_overlap = None, 0.0
    for r in found:  # back to the photo's pixels; dlib's right/bottom are inclusive
        fx0, fy0 = sx0 + r.left() / scale, sy0 + r.top() / scale
        fx1, fy1 = sx0 + (r.right() + 1) / scale, sy0 + (r.bottom() + 1) / scale
        if not (x0 <= (fx0 + fx1) / 2 <= x1 and y0 <= (fy0 + fy1) / 2 <= y1):
            continue  # a face in the margin: someone else's
        overlap = max(0.0, min(x1, fx1) - max(x0, fx0)) * max(0.0, min(y1, fy1) - max(y0, fy0))
        if overlap > best_overlap:
            best, best_overlap = (fx0, fy0, fx1, fy1), overlap
    if best is None:
        raise faces.NoFace(f"dlib's face detector found no face in the box (score > {FACE_SCORE:g})")
    fx0, fy0, fx1, fy1 = best
    return m.dlib.rectangle(round(fx0), round(fy0), round(fx1) - 1, round(fy1) - 1)


# --- data sets: files, boxes, cache ----------------------------------------------------------------


def describe_files(paths, boxes=None, *, find_faces: bool = False, settings: Alignment = ALIGNMENT,
                   cache_dir=None, progress: bool = False, workers: int | None = None
                   ) -> tuple[np.ndarray, list[dict]]:
    """Descriptors (N, 128) float32 of N photos, each read at full resolution, and the failures.

    boxes: per photo its face box ("x0 y0 x1 y1" in the photo's pixels, as manifests hold) or None: the
    photo is a face crop, or with find_faces=True its face is found by MTCNN as `faceattr prepare` finds it.
    A photo that fails gets a NaN row and an entry {"path", "reason", "detail"} as in prepare's report
    (reason: unreadable, no face, several faces or descriptor failed); the caller decides whether too
    many failed. cache_dir: default $FACEATTR_CACHE/descriptors. The photos not in the cache are described
    by `workers` processes (default one per core): dlib describes one face at a time per process.
    """
    paths = [os.fspath(p) for p in paths]
    boxes = _parse_boxes(paths, [None] * len(paths) if boxes is None else list(boxes))
    root = (Path(cache_dir).expanduser() if cache_dir else cache_root() / "descriptors") / settings.key
    out = np.full((len(paths), DIMENSIONS), np.nan, dtype=np.float32)
    failures: dict[int, dict] = {}
    todo = []   # (row, path, box, cache entry) of the photos the cache does not answer
    for i, (path, box) in enumerate(zip(paths, boxes)):
        try:
            found = _cached(path, box, find_faces, root)
        except DataError as exc:
            failures[i] = _failure(path, exc)
            continue
        if isinstance(found, np.ndarray):
            out[i] = found
        else:
            todo.append((i, path, box, found))
    described = _describe_all([(path, box, entry) for _, path, box, entry in todo], find_faces, settings, workers)
    bar = _progress(len(paths), len(paths) - len(todo), progress)
    for (i, path, _, _), (vector, error) in zip(todo, described):
        if error is None:
            out[i] = vector
        else:
            failures[i] = {"path": path, **error}
        bar.update(1)
    bar.close()
    return out, [failures[i] for i in sorted(failures)]


def _failure(path: str, exc: DataError) -> dict:
    return {"path": path, "reason": getattr(exc, "reason", DescriptorFailed.reason), "detail": str(exc)}


def _describe_all(items: list, find_faces: bool, settings: Alignment, workers: int | None):
    """(vector, None) or (None, {"reason", "detail"}) per (path, box, entry), in order: in this process,
    or in `workers` processes (spawned: this process may run TensorFlow threads a fork would not copy)."""
    workers = min(workers or os.cpu_count() or 1, len(items))
    if workers <= 1:
        return (_describe_item(item, find_faces, settings) for item in items)
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial
    from multiprocessing import get_context

    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                               initializer=faces.one_tf_thread if find_faces else None)
    chunk = max(1, min(16, len(items) // (4 * workers)))   # few round trips, yet every worker busy to the end

    def results():
        with pool:
            yield from pool.map(partial(_describe_item, find_faces=find_faces, settings=settings), items,
                                chunksize=chunk)
    return results()


def _describe_item(item, find_faces: bool, settings: Alignment):
    path, box, entry = item
    try:
        return _describe_file(path, box, find_faces, settings, entry), None
    except DataError as exc:
        failure = _failure(path, exc)
        return None, {"reason": failure["reason"], "detail": failure["detail"]}


def _parse_boxes(paths: list[str], boxes: list) -> list:
    """Every box checked before any compute; a bad one is the manifest's error, not a photo's failure."""
    if len(boxes) != len(paths):
        raise DataError(f"{len(boxes)} face boxes for {len(paths)} photos")
    parsed, bad = [], []
    for path, box in zip(paths, boxes):
        try:
            parsed.append(None if _no_box(box) else parse_box(box))
        except DataError as exc:
            bad.append(f"{path}: {exc}")
    if bad:
        raise DataError(f"{len(bad)} bad face boxes:\n" + "\n".join(bad[:20]))
    return parsed


def _no_box(box) -> bool:
    """None, or what an empty manifest cell reads as (NaN, "")."""
    return box is None or (isinstance(box, float) and math.isnan(box)) or (isinstance(box, str) and not box.strip())


def _cached(path: str, box, find_faces: bool, root: Path) -> np.ndarray | Path:
    """The photo's cached descriptor, or its cache entry (no suffix) when it is not cached yet; raises the
    cached verdict (no face, several faces) or Unreadable."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise Unreadable(f"cannot read file ({exc.strerror or exc})") from None
    sha1 = hashlib.sha1(content).hexdigest()
    entry = by_content(root, sha1, f"-{_box_tag(box, find_faces)}")
    cached = _cache_get(entry)
    return entry if cached is None else cached


def _describe_file(path: str, box, find_faces: bool, settings: Alignment, entry: Path) -> np.ndarray:
    """Describe the photo at `path` and store the descriptor (or the no-face verdict) at `entry`."""
    try:
        image = load_rgb(Path(path).read_bytes())
    except OSError as exc:
        raise Unreadable(f"cannot read file ({exc.strerror or exc})") from None
    except DataError as exc:
        raise Unreadable(str(exc).removeprefix("<bytes>: ")) from None
    try:
        if box is None and find_faces:
            box = _mtcnn_face_box(image)
        vector = describe(np.asarray(image), box, settings)
    except (faces.NoFace, faces.SeveralFaces) as exc:  # a verdict on this content: the same next time
        write_atomic(Path(f"{entry}.json"), json.dumps({"reason": exc.reason, "detail": str(exc)}))
        raise
    write_atomic(Path(f"{entry}.npy"), npy_bytes(vector))
    return vector


def _mtcnn_face_box(image: Image.Image):
    try:
        detection = faces.detect([image])[0]
    except Exception as exc:  # a detector crash on one odd image must not stop the run (as in prepare)
        raise DescriptorFailed(f"face detector failed ({type(exc).__name__}: {exc})") from exc
    return parse_box(faces.region_boxes(faces.choose_face(detection))["face_box"])


def _box_tag(box, find_faces: bool) -> str:
    """The box part of the cache key: a manifest's box changes the descriptor, so does the way a box is found."""
    if box is not None:
        return "box-" + _short_hash(" ".join(f"{v:.2f}" for v in box))
    if find_faces:  # everything that decides MTCNN's box, so no detection is needed to look the photo up
        return "mtcnn-" + _short_hash(f"{faces.DETECTOR} {faces.MAX_SIDE} {faces.MIN_CONFIDENCE} "
                                      f"{faces.SUBJECT_AREA_RATIO} {faces.FACE_SIDE_BOX}")
    return "whole"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _cache_get(entry: Path) -> np.ndarray | None:
    """The cached descriptor, or raises the cached verdict; None when absent or unreadable (then recomputed)."""
    try:
        vector = np.load(f"{entry}.npy", allow_pickle=False)
        if vector.shape == (DIMENSIONS,) and vector.dtype == np.float32:
            return vector
    except (OSError, ValueError):
        pass
    try:
        verdict = json.loads(Path(f"{entry}.json").read_text())
    except (OSError, ValueError):
        return None
    kind = {faces.NoFace.reason: faces.NoFace, faces.SeveralFaces.reason: faces.SeveralFaces}.get(verdict.get("reason"))
    if kind is None:
        return None
    raise kind(verdict.get("detail", ""))




def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, initial=done, unit="photo", desc="face descriptors", disable=None if enabled else True,
                smoothing=0.1)


# --- a training-free identity baseline -------------------------------------------------------------


def cosine_baseline_scores(train_descriptors_of_target, descriptors) -> np.ndarray:
    """Scores (N,) for "is this the target person": cosine similarity of each descriptor to the mean of
    the target's training descriptors. No training: the baseline a trained identity head has to beat."""
    train = np.asarray(train_descriptors_of_target, dtype=np.float64)
    x = np.asarray(descriptors, dtype=np.float64)
    if train.ndim != 2 or len(train) == 0 or x.ndim != 2 or x.shape[1] != train.shape[1]:
        raise DataError(f"need (n >= 1, d) training and (N, d) descriptors, got {train.shape} and {x.shape}")
    centre = train.mean(axis=0)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(centre)
    return x @ centre / np.maximum(norms, 1e-12)


MAX_FAILURE_SHARE = 0.1   # as `faceattr prepare`'s default: beyond this a data set is refused


def describe_rows(frame, max_failure_share: float | None = MAX_FAILURE_SHARE, progress: bool = True):
    """Descriptors of a data set's photos (manifest rows: `path`, and `face_box` for whole photos; a
    face crop or a photo without a box is searched whole), which rows have one, and the failures.

    Returns (descriptors (N, 128), kept (N,) bool, failures [{"path", "reason", "detail"}]). When at
    least `max_failure_share` of the photos fail (None: never), DataError lists every failure (file and
    reason) before any training, as `faceattr prepare` reports them.
    """
    boxes = None
    if "face_box" in frame:
        boxes = [box if region == "photo" else None for box, region in zip(frame["face_box"], frame["image_region"])]
    found, failures = describe_files(list(frame["path"]), boxes, progress=progress)
    kept = ~np.isnan(found).any(axis=1)
    if failures and max_failure_share is not None and len(failures) >= max_failure_share * len(frame):
        listed = "\n".join(f"  {f['path']}: {f['reason']} ({f['detail']})" for f in failures[:50])
        more = f"\n  ... and {len(failures) - 50} more" if len(failures) > 50 else ""
        raise DataError(f"{len(failures)} of {len(frame)} photos ({len(failures) / len(frame):.0%}) have no usable "
                        f"face for the face descriptor (the limit is {max_failure_share:.0%}):\n{listed}{more}")
    return found, kept, failures


def describe_data(data, progress: bool = True):
    """A data set (data/loading.Data) restricted to the photos with a usable face, their descriptors, and
    the photos left out (each reported on stderr with its reason; DataError when too many fail)."""
    import sys

    found, kept, left_out = describe_rows(data.frame, progress=progress)
    for failure in left_out:
        print(f"faceattr: left out {failure['path']}: {failure['reason']} ({failure['detail']})", file=sys.stderr)
    return data.subset(kept), found[kept], left_out


def face_at_full_resolution(row) -> np.ndarray:
    """A manifest row's face, cut from the photo at full resolution (its face box with a SEARCH_MARGIN
    on each side; the whole image for a face crop): what a served request for a descriptor model holds."""
    image = load_rgb(row["path"])
    box = row.get("face_box") if row.get("image_region") == "photo" else None
    if _no_box(box):
        return np.asarray(image)
    x0, y0, x1, y1 = parse_box(box)
    dx, dy = (x1 - x0) * SEARCH_MARGIN, (y1 - y0) * SEARCH_MARGIN
    return np.asarray(image.crop((max(0, x0 - dx), max(0, y0 - dy), min(image.width, x1 + dx),
                                  min(image.height, y1 + dy))))


def example_face(frame, tries: int = 10) -> np.ndarray:
    """A face cut at full resolution (`face_at_full_resolution`) that dlib finds on its own: the served
    model's input example (a cut with a margin is searched whole, so a borderline face can be missed)."""
    for _, row in frame.head(tries).iterrows():
        face = face_at_full_resolution(row)
        try:
            describe(face)
            return face
        except DataError:
            continue
    return face_at_full_resolution(frame.iloc[0])
