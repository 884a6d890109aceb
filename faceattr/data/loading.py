"""Open the data set an experiment names (the synthetic default or files), decode it and cut it into splits.

This is the only module that reads image files for training (prepare and serving read single
photos through data/regions.py).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.data import manifest, synthetic
from faceattr.data.manifest import GENDERS
from faceattr.data.regions import crop_region, load_rgb, parse_box
from faceattr.errors import DataError

UNKNOWN_GENDER = (0.5, 0.5)      # the gender input when nothing better is known


@dataclass
class Data:
    """A validated data set, decoded and split; `frame` has a `split` and a `content_sha1` column."""
    name: str
    source: str
    frame: pd.DataFrame
    images: np.ndarray          # every row's crop of the experiment's region, frame order

    @property
    def digest(self) -> str:
        return hashlib.sha1("".join(self.frame["content_sha1"]).encode()).hexdigest()[:16]

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.frame["split"].to_numpy() == split)

    def subset(self, keep: np.ndarray) -> "Data":
        """The rows where `keep` is true (e.g. the photos a face descriptor could be computed for)."""
        return Data(self.name, self.source, self.frame[keep].reset_index(drop=True), self.images[keep])


@dataclass
class Split:
    """One split's model inputs and labels."""
    images: np.ndarray      # (N, H, W, 3) uint8
    gender: np.ndarray      # (N, 2) float32: [p_male, p_female] fed to regressions
    labels: np.ndarray      # what the task learns: (N,) float32, or (N, 2) one-hot for gender
    frame: pd.DataFrame     # the manifest rows, same order
    descriptors: np.ndarray | None = None   # (N, 128) face descriptors, for a model that reads them

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> "Split":
        return self.take(np.arange(min(n, len(self))))

    def take(self, rows) -> "Split":
        return Split(self.images[rows], self.gender[rows], self.labels[rows], self.frame.iloc[rows],
                     None if self.descriptors is None else self.descriptors[rows])

    @staticmethod
    def concat(splits: list["Split"]) -> "Split":
        """The rows of several splits together (identity's seen/unseen figures pool validation and test)."""
        descriptors = [s.descriptors for s in splits]
        return Split(np.concatenate([s.images for s in splits]), np.concatenate([s.gender for s in splits]),
                     np.concatenate([s.labels for s in splits]), pd.concat([s.frame for s in splits]),
                     None if any(d is None for d in descriptors) else np.concatenate(descriptors))

    @property
    def model_input(self) -> tuple[str, np.ndarray]:
        """The model's main input: ("descriptor", descriptors) when the split has them, else ("image", crops)."""
        return ("image", self.images) if self.descriptors is None else ("descriptor", self.descriptors)


# The synthetic generator's settings: a run on a manifest or folder did not use them, and does not log them
# (its size is the data.rows it read).
SYNTHETIC_SETTINGS = ("data.size", "data.seed", "data.rounded", "data.persons")


def open_data(config: dict, task) -> Data:
    """Read, validate (every bad row in one DataError, before any training) and decode the data;
    `task.split` deals the rows (faceattr/tasks.py)."""
    data, target, region = config["data"], config["target"], config["region"]
    if data["source"] == "synthetic":
        csv = synthetic.default_dataset(size=data["size"], seed=data["seed"], rounded=data["rounded"],
                                        n_persons=data["persons"])
        name = csv.parent.name
        frame = manifest.load_dataset(csv, targets=(target,), region=region, image_region="photo")
    else:
        source = Path(data["source"]).expanduser()
        name = source.stem if source.suffix else source.name
        if source.is_dir() and not (source / "labels.csv").is_file() and (source / region / "labels.csv").is_file():
            source = source / region  # a `faceattr prepare` output: one folder of ready crops per region
        elif source.is_dir() and not (source / "labels.csv").is_file() and (source / "photo" / "labels.csv").is_file():
            source = source / "photo"  # ... whose whole photos and boxes serve a region cut twice (each eye)
        frame = manifest.load_dataset(source, targets=(target,), region=region,
                                      image_region=data.get("image_region"), folders=data.get("folders"))
    if len(frame) < 10:
        raise DataError(f"{data['source']}: {len(frame)} images; at least 10 are needed to split and train")
    frame = manifest.one_row_per_cut(frame, region)
    images, digests = load_crops(frame, region)
    splits, columns = task.split(frame, digests, images, data)
    frame = frame.assign(**columns, content_sha1=digests, split=splits).reset_index(drop=True)
    for split in ("train", "val"):
        if not (frame["split"] == split).any():
            raise DataError(f"{data['source']}: the {split} split is empty; use more images")
    return Data(name=name, source=str(data["source"]), frame=frame, images=images)


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


def make_split(data: Data, split: str, labels: np.ndarray, gender: np.ndarray,
               descriptors: np.ndarray | None = None) -> Split:
    """One split's images, gender inputs and labels (`labels`, `gender` and `descriptors` cover every
    row of `data`)."""
    rows = data.rows(split)
    return Split(images=data.images[rows], gender=gender[rows], labels=labels[rows],
                 frame=data.frame.iloc[rows].reset_index(drop=True),
                 descriptors=None if descriptors is None else descriptors[rows])


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


def gender_one_hot(frame: pd.DataFrame) -> np.ndarray:
    """[p_male, p_female] from the `gender` labels; rows without a label get the 'unknown' [0.5, 0.5]."""
    out = np.tile(np.asarray(UNKNOWN_GENDER, np.float32), (len(frame), 1))
    if "gender" in frame:
        for i, value in enumerate(GENDERS):
            rows = (frame["gender"] == value).to_numpy()
            out[rows] = np.eye(2, dtype=np.float32)[i]
    return out


def shows_faces(frame: pd.DataFrame) -> bool:
    """Whether a face crop can be cut from every image (whole photos with face boxes, or face crops)."""
    photos = (frame["image_region"] == "photo").all() and "face_box" in frame and frame["face_box"].notna().all()
    return bool(photos or (frame["image_region"] == "face").all())
