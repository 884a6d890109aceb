"""Open the data an experiment names (the synthetic default, files, or several sets), decode it and cut
it into splits.

Several sets (`data.sets`, or `data:` as a list in the YAML) are read one by one, each with its own
declared `image_region` (ready crops, or whole photos whose region boxes the landmark cut finds:
data/faces.py, cached by content), fixed label values and sample weight; every row keeps its set's name
(`set`, a slice of every run) and each set is split by its own rule (a person's or a scene's photos stay
on one side within their set). Every set is read and checked before any photo is decoded for training:
an error names `data[i]`.

This is the only module that reads image files for training (prepare and serving read single
photos through data/regions.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.data import faces, manifest, synthetic
from faceattr.data.manifest import GENDERS
from faceattr.data.regions import box_columns, crop_region, load_rgb, parse_box
from faceattr.errors import ConfigError, DataError

UNKNOWN_GENDER = (0.5, 0.5)      # the gender input when nothing better is known
SET, WEIGHT = "set", "weight"    # each row's set name and its sample weight (several sets)


@dataclass
class Data:
    """A validated data set, decoded and split; `frame` has a `split` and a `content_sha1` column."""
    name: str
    source: str
    frame: pd.DataFrame
    images: np.ndarray          # every row's crop of the experiment's region, frame order
    left_out: list = field(default_factory=list)   # whole photos the landmark cut found no subject in

    @property
    def digest(self) -> str:
        return hashlib.sha1("".join(self.frame["content_sha1"]).encode()).hexdigest()[:16]

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.frame["split"].to_numpy() == split)

    def subset(self, keep: np.ndarray) -> "Data":
        """The rows where `keep` is true (e.g. the photos a face descriptor could be computed for)."""
        return Data(self.name, self.source, self.frame[keep].reset_index(drop=True), self.images[keep], self.left_out)


@dataclass
class Split:
    """One split's model inputs and labels: one input per input kind (models/inputs.py), filled by the kind."""
    inputs: dict[str, np.ndarray]   # kind name -> rows: "image" (N, H, W, 3) uint8 crops, always (the galleries
                                    # show them); "descriptor" (N, 128) for a model that reads face descriptors
    gender: np.ndarray      # (N, 2) float32: [p_male, p_female] fed to regressions
    labels: np.ndarray      # what the task learns: (N,) float32, or (N, 2) one-hot for gender
    frame: pd.DataFrame     # the manifest rows, same order
    reads: str = "image"    # the kind the model reads

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> np.ndarray:
        return self.inputs["image"]

    @property
    def descriptors(self) -> np.ndarray | None:
        """The face descriptors, where the model's kind computed them (identity's cosine baseline reads them)."""
        return self.inputs.get("descriptor")

    def head(self, n: int) -> "Split":
        return self.take(np.arange(min(n, len(self))))

    def take(self, rows) -> "Split":
        return Split({k: v[rows] for k, v in self.inputs.items()}, self.gender[rows], self.labels[rows],
                     self.frame.iloc[rows], self.reads)

    @staticmethod
    def concat(splits: list["Split"]) -> "Split":
        """The rows of several splits together (identity's seen/unseen figures pool validation and test)."""
        inputs = {k: np.concatenate([s.inputs[k] for s in splits]) for k in splits[0].inputs}
        return Split(inputs, np.concatenate([s.gender for s in splits]), np.concatenate([s.labels for s in splits]),
                     pd.concat([s.frame for s in splits]), splits[0].reads)

    @property
    def model_input(self) -> tuple[str, np.ndarray]:
        """The model's main input: (its kind's name, the rows of that input)."""
        return self.reads, self.inputs[self.reads]


# The synthetic generator's settings: a run on a manifest or folder did not use them, and does not log them
# (its size is the data.rows it read).
SYNTHETIC_SETTINGS = ("data.size", "data.seed", "data.rounded", "data.persons")


def open_data(config: dict, task) -> Data:
    """Read, validate (every bad row in one DataError, before any training) and decode the data;
    `task.split` deals the rows (faceattr/tasks.py), set by set when there are several."""
    data, region = config["data"], config["region"]
    target = task.label_ranges()   # {column: declared range}: what every set's labels are checked against
    left_out: list[dict] = []
    if data.get("sets"):
        if data["source"] != "synthetic":
            raise ConfigError(f"data.source={data['source']!r} and a list of data sets: give one (the sets are in "
                              f"the experiment's YAML; a copy of it can list other sets)")
        frame, left_out = read_sets(data["sets"], target, region)
        name = "+".join(dict.fromkeys(frame[SET]))
    elif data["source"] == "synthetic":
        csv = synthetic.default_dataset(size=data["size"], seed=data["seed"], rounded=data["rounded"],
                                        n_persons=data["persons"])
        name = csv.parent.name
        frame = smoke_labels(manifest.read_data_set(csv, image_region="photo"), target, data)
        frame = manifest.validate(frame, targets=target, region=region, source=str(csv))
    else:
        source = Path(data["source"]).expanduser()
        name = source.stem if source.suffix else source.name
        if source.is_dir() and not (source / "labels.csv").is_file() and (source / region / "labels.csv").is_file():
            source = source / region  # a `faceattr prepare` output: one folder of ready crops per region
        elif source.is_dir() and not (source / "labels.csv").is_file() and (source / "photo" / "labels.csv").is_file():
            source = source / "photo"  # ... whose whole photos and boxes serve a region cut twice (each eye)
        frame = manifest.load_dataset(source, targets=target, region=region,
                                      image_region=data.get("image_region"), folders=data.get("folders"))
    if len(frame) < 10:
        raise DataError(f"{data['source']}: {len(frame)} images; at least 10 are needed to split and train")
    frame = manifest.one_row_per_cut(frame, region)
    images, digests = load_crops(frame, region)
    if data.get("sets"):   # each set by its own rule: a person's photos never straddle splits within it
        splits, columns = [""] * len(frame), {}
        for entry, rows in zip(data["sets"], _rows_of_sets(frame)):
            dealt, extra = task.split(frame.iloc[rows], [digests[r] for r in rows], images[rows],
                                      {**data, "split": entry["split"] or data["split"]})
            for r, split in zip(rows, dealt):
                splits[r] = split
            for column, values in extra.items():
                columns.setdefault(column, [None] * len(frame))
                for r, value in zip(rows, values):
                    columns[column][r] = value
    else:
        splits, columns = task.split(frame, digests, images, data)
    frame = frame.assign(**columns, content_sha1=digests, split=splits).reset_index(drop=True)
    for split in ("train", "val"):
        if not (frame["split"] == split).any():
            raise DataError(f"{name}: the {split} split is empty; use more images")
    source = ";".join(entry["source"] for entry in data["sets"]) if data.get("sets") else str(data["source"])
    return Data(name=name, source=source, frame=frame, images=images, left_out=left_out)


def smoke_labels(frame: pd.DataFrame, targets: dict, data: dict) -> pd.DataFrame:
    """Synthetic photos for a target the generator does not draw (smiling, age): with `data.random_labels`,
    labels drawn uniformly in the target's declared range (seeded by `data.seed`), for a smoke run that
    checks the plumbing, not the model; without it, an error saying what the photos do carry."""
    missing = [column for column in targets if column not in frame]
    if not missing:
        return frame
    if not data["random_labels"]:
        raise DataError(f"synthetic photos carry no `{missing[0]}` label (they have "
                        f"{', '.join(c for c in frame.columns if not c.endswith(('_box', '_true')) and c not in ('row', 'path', 'image_region'))}): "
                        f"train on a data set that holds it, or set data.random_labels=true for a smoke run "
                        f"(random labels in the declared range)")
    rng = np.random.default_rng([data["seed"], 7])
    drawn = {}
    for column in missing:
        if targets[column] is None:
            raise DataError(f"synthetic photos carry no `{column}`, and it is not a number to draw at random")
        drawn[column] = rng.uniform(*targets[column], size=len(frame))
    return frame.assign(**drawn)


def _rows_of_sets(frame: pd.DataFrame) -> list[np.ndarray]:
    """Each set's rows, in the order of `data.sets`."""
    names = frame[SET].to_numpy(object)
    return [np.flatnonzero(names == name) for name in dict.fromkeys(names)]


def read_sets(sets: list[dict], targets: dict, region: str) -> tuple[pd.DataFrame, list[dict]]:
    """Several data sets as one manifest with `set` and `weight` columns, and the photos left out.

    First every set is read and its labels checked (a missing set or a set without the target's label
    is a DataError naming `data[i]`), then each is validated (files decode, labels in range) and its whole
    photos are cut by landmarks; only then does training decode anything."""
    names = [set_name(entry) for entry in sets]
    if len(set(names)) < len(names):
        raise DataError(f"data: two sets share the name {next(n for n in names if names.count(n) > 1)!r}; "
                        f"give one a `name`")
    read = []
    for i, (entry, name) in enumerate(zip(sets, names)):
        where = f"data[{i}] ({name}, {entry['source']})"
        try:
            frame = manifest.read_data_set(entry["source"], image_region=entry.get("image_region"),
                                           folders=entry.get("folders"))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        frame = frame.assign(**(entry.get("labels") or {}))
        for target in targets:
            if target not in frame or frame[target].isna().all():
                raise DataError(f"{where}: no `{target}` label (columns: {', '.join(frame.columns.drop(['row'], errors='ignore'))}); "
                                f"give every photo one with `labels: {{{target}: VALUE}}`")
        if entry.get("size"):   # a stable part: the same photos whatever the file's order
            keep = sorted(frame.index, key=lambda r: hashlib.sha1(str(frame.at[r, "path"]).encode()).hexdigest())
            frame = frame.loc[sorted(keep[:entry["size"]])]
        read.append((where, entry, name, frame))
    parts, left_out = [], []
    for where, entry, name, frame in read:
        uncut = region != "photo" and (frame["image_region"] == "photo").any() and \
            any(c not in frame for c in box_columns(region))
        try:
            frame = manifest.validate(frame, targets=targets, region="photo" if uncut else region, source=where)
        except DataError as exc:
            raise DataError(str(exc)) from None
        if uncut:
            frame, missed = cut_by_landmarks(frame, where, entry["max_failure_share"])
            left_out += [{**m, SET: name} for m in missed]
        parts.append(frame.assign(**{SET: name, WEIGHT: float(entry["weight"])}))
    return pd.concat(parts, ignore_index=True), left_out


def set_name(entry: dict) -> str:
    """A set's name in slices and metrics: its `name`, else its manifest's stem or its folder's name."""
    path = Path(entry["source"])
    return entry.get("name") or (path.stem if path.suffix else path.name)


def cut_by_landmarks(frame: pd.DataFrame, where: str, max_failure_share: float) -> tuple[pd.DataFrame, list[dict]]:
    """Whole photos without region boxes get their subject's boxes (faces.region_boxes) and `faces` (how
    many faces the photo shows), as `faceattr prepare` cuts them; detections are cached by content.
    Photos without a clear subject are left out and listed; more than `max_failure_share` of them stop
    the run with the list (as `prepare` stops), before any training."""
    def decoded(path):
        with open(path, "rb") as fh:
            content = fh.read()
        return load_rgb(content), hashlib.sha1(content).hexdigest()

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        images, digests = zip(*pool.map(decoded, frame["path"]))
    found = faces.detect_photos(list(images), list(digests), progress=f"finding faces in {where}")
    boxes, missed = [], []
    for path, detection in zip(frame["path"], found):
        try:
            if "error" in detection:
                raise faces.NoFace(detection["error"])
            face = faces.choose_face(detection)
            boxes.append({**faces.region_boxes(face), faces.FACES: face[faces.FACES]})
        except DataError as exc:
            boxes.append(None)
            missed.append({"path": path, "reason": getattr(exc, "reason", "no face"), "detail": str(exc)})
    if len(missed) > max_failure_share * len(frame):
        lines = [f"  {m['path']}: {m['detail']}" for m in missed[:manifest.MAX_LISTED]]
        raise DataError(f"{where}: the landmark cut found no clear subject in {len(missed)} of {len(frame)} photos "
                        f"({len(missed) / len(frame):.1%}, above max_failure_share {max_failure_share:g}); "
                        f"nothing was trained:\n" + "\n".join(lines))
    kept = [b is not None for b in boxes]
    if missed:   # said now, before the fit; the run lists them (data/left_out.json)
        print(f"faceattr: {where}: {len(missed)} of {len(frame)} photos left out (no clear subject face)",
              file=sys.stderr)
    cut = pd.DataFrame([b for b in boxes if b is not None], index=frame.index[kept])
    return frame[kept].drop(columns=[c for c in cut if c in frame]).join(cut), missed


def load_crops(frame: pd.DataFrame, region: str) -> tuple[np.ndarray, list[str]]:
    """Decode every image and cut the model's region: (N, H, W, 3) uint8 and each file's sha1."""
    def one(row) -> tuple[np.ndarray, str]:
        with open(row.path, "rb") as fh:
            content = fh.read()
        box = None
        if row.image_region == "photo" and region != "photo":
            box = parse_box(getattr(row, f"{region}_box"))
        return crop_region(load_rgb(content), region, box), hashlib.sha1(content).hexdigest()

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(one, frame.itertuples(index=False)))
    return np.stack([crop for crop, _ in results]), [digest for _, digest in results]


def make_split(data: Data, split: str, labels: np.ndarray, gender: np.ndarray, inputs: dict | None = None,
               reads: str = "image") -> Split:
    """One split's inputs, gender inputs and labels (`labels`, `gender` and each of `inputs`, the inputs
    beyond the crops that an input kind computed, cover every row of `data`); `reads`: the model's kind."""
    rows = data.rows(split)
    every = {"image": data.images, **(inputs or {})}
    return Split({k: v[rows] for k, v in every.items()}, gender[rows], labels[rows],
                 data.frame.iloc[rows].reset_index(drop=True), reads)


def crops_made_by(frame: pd.DataFrame) -> str:
    """How the data's crops were made (regions.MADE_BY): all cut from whole photos, all cut by
    `faceattr prepare` (`cut_by` = faceattr), or else ready crops from elsewhere."""
    if (frame["image_region"] == "photo").all():
        return "photo"
    if "cut_by" in frame and (frame["cut_by"] == "faceattr").all():
        return "faceattr"
    return "ready"


def has_gender_labels(frame: pd.DataFrame) -> bool:
    return "gender" in frame and frame["gender"].isin(GENDERS).all()


def unknown_gender(rows: int) -> np.ndarray:
    """The gender input of `rows` photos whose gender nothing tells: (rows, 2) float32 [0.5, 0.5]."""
    return np.tile(np.asarray(UNKNOWN_GENDER, np.float32), (rows, 1))


def gender_one_hot(frame: pd.DataFrame) -> np.ndarray:
    """[p_male, p_female] from the `gender` labels; rows without a label get the 'unknown' [0.5, 0.5]."""
    out = unknown_gender(len(frame))
    if "gender" in frame:
        for i, value in enumerate(GENDERS):
            rows = (frame["gender"] == value).to_numpy()
            out[rows] = np.eye(2, dtype=np.float32)[i]
    return out


def shows_faces(frame: pd.DataFrame) -> bool:
    """Whether a face crop can be cut from every image (whole photos with face boxes, or face crops)."""
    photos = (frame["image_region"] == "photo").all() and "face_box" in frame and frame["face_box"].notna().all()
    return bool(photos or (frame["image_region"] == "face").all())
