"""Open the data set an experiment names (the synthetic default or files) and cut it into splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.data import manifest, synthetic
from faceattr.data.manifest import GENDERS
from faceattr.data.pipeline import Split, grouped_split_names, load_crops, phash_split_names, split_name
from faceattr.errors import DataError

UNKNOWN_GENDER = (0.5, 0.5)


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


def open_data(config: dict) -> Data:
    """Read, validate (every bad row in one DataError, before any training) and decode the data."""
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
        frame = manifest.load_dataset(source, targets=(target,), region=region,
                                      image_region=data.get("image_region"), folders=data.get("folders"))
    if len(frame) < 10:
        raise DataError(f"{data['source']}: {len(frame)} images; at least 10 are needed to split and train")
    images, digests = load_crops(frame, region)
    if config["task"] == "identity":
        data["person"], splits, groups = identity_split_names(frame, digests, data)
        frame = frame.assign(group=groups)
    else:
        splits = split_names(data.get("split", "auto"), frame, images, digests)
    frame = frame.assign(content_sha1=digests, split=splits).reset_index(drop=True)
    for split in ("train", "val"):
        if not (frame["split"] == split).any():
            raise DataError(f"{data['source']}: the {split} split is empty; use more images")
    return Data(name=name, source=str(data["source"]), frame=frame, images=images)


def split_names(kind: str, frame: pd.DataFrame, images: np.ndarray, digests: list[str]) -> list[str]:
    """train/val/test per row. `person`: one person's photos never straddle splits (else a model can
    recognise the person instead of reading the attribute: gender reached 98.5% that way on synthetic
    faces); `phash`: near-duplicate frames (video) kept on one side; `content`: by file hash;
    `auto`: person when every row has one, else content."""
    if kind == "auto":
        kind = "person" if "person" in frame and frame["person"].notna().all() else "content"
    if kind == "person":
        return grouped_split_names(frame["person"].astype(str).tolist())
    if kind == "phash":
        return phash_split_names(images, digests)
    return [split_name(d) for d in digests]


def identity_split_names(frame: pd.DataFrame, digests: list[str], data: dict) -> tuple[str, list[str], list[str]]:
    """The identity task's split: (target person, train/val/test per row, group per row).

    Groups: `target` (the person to recognise), `seen` (other people with photos in training) and
    `unseen` (a `data.unseen_share` of the other people, never in training: half of them in
    validation, half in test). The target's and each seen person's photos are dealt by content hash:
    a `data.holdout` share held out (half validation, half test), at least one photo kept for training.
    So validation/test hold new photos of seen people and photos of people never seen.
    The target (`data.person`) defaults to the person with the most photos (first by name)."""
    if "person" not in frame or frame["person"].isna().any():
        raise DataError(f"{data['source']}: the identity task needs a `person` on every row")
    people = frame["person"].astype(str).to_numpy()
    counts = pd.Series(people).value_counts()
    person = data.get("person")
    if person is None:
        person = sorted(counts.index, key=lambda p: (-counts[p], p))[0]
    if person not in counts:
        raise DataError(f"{data['source']}: data.person={person!r} has no photos; people here: "
                        f"{', '.join(sorted(counts.index)[:10])}{' ...' if len(counts) > 10 else ''}")
    others = sorted((p for p in counts.index if p != person), key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    n_unseen = min(len(others) - 1, max(1, round(data["unseen_share"] * len(others)))) if len(others) > 1 else 0
    unseen = {p: ("val" if i % 2 == 0 else "test") for i, p in enumerate(others[:n_unseen])}
    splits, groups = [""] * len(frame), [""] * len(frame)
    for who in counts.index:
        rows = np.flatnonzero(people == who)
        group = "target" if who == person else ("unseen" if who in unseen else "seen")
        if group == "unseen":
            names = [unseen[who]] * len(rows)
        else:
            rows = sorted(rows, key=lambda r: digests[r])
            held = min(len(rows) - 1, round(data["holdout"] * len(rows)))
            n_val = (held + 1) // 2
            names = ["val"] * n_val + ["test"] * (held - n_val) + ["train"] * (len(rows) - held)
        for r, name in zip(rows, names):
            splits[r], groups[r] = name, group
    return person, splits, groups


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


def make_split(data: Data, split: str, config: dict, gender: np.ndarray) -> Split:
    """One split's images, gender inputs and labels (regression: float target; gender: one-hot)."""
    rows = data.rows(split)
    frame = data.frame.iloc[rows].reset_index(drop=True)
    return Split(images=data.images[rows], gender=gender[rows], labels=labels_of(frame, config), frame=frame)


def labels_of(frame: pd.DataFrame, config: dict) -> np.ndarray:
    """What the model learns for these rows: the float target (regression), the one-hot gender
    (classification) or 1 for the target person's photos (identity, `data.person` as resolved by open_data)."""
    if config["task"] == "classification":
        return gender_one_hot(frame)
    if config["task"] == "identity":
        return (frame["person"].astype(str) == str(config["data"]["person"])).to_numpy(np.float32)
    return frame[config["target"]].to_numpy(np.float32)
