"""Stable train/val/test splits: by content hash, by person, by near-duplicate scene, or identity's deal.

Every split is a pure function of the files (and their labels), so it is the same across runs,
machines and orderings, and a model trained on any set built from the same files never saw `test`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from faceattr.errors import DataError

TEST_SHARE = 0.10       # held out: never trained on, never used for early stopping
VAL_SHARE = 0.10        # of the rest: the seeds' 90/10 train/validation split
PHASH_DISTANCE = 4      # 8x8 average hashes this close (of 64 bits) count as the same scene (6 chains
                        # 54% of yawn-mouth into one group; 4: largest group 12%, eye-state 1%)


def split_names(kind: str, frame: pd.DataFrame, images: np.ndarray, digests: list[str]) -> list[str]:
    """train/val/test per row. `person`: one person's photos never straddle splits (else a model can
    recognise the person instead of reading the attribute: gender reached 98.5% that way on synthetic
    faces); `phash`: near-duplicate frames (video) kept on one side; `video`: the frames of one video (its
    `video` column) on one side, where they are too different for phash to join (a yawn and the face
    before it); `content`: by file hash; `auto`: person when every row has one, else content."""
    if kind == "auto":
        kind = "person" if "person" in frame and frame["person"].notna().all() else "content"
    if kind == "video":
        lacking = frame.index[frame["video"].isna()] if "video" in frame else frame.index
        if len(lacking):
            raise DataError(f"split `video` needs the `video` column on every row: {len(lacking)} rows lack it "
                            f"(first: {frame.loc[lacking[0], 'path']})")
    if kind in ("person", "video"):
        return grouped_split_names(frame[kind].astype(str).tolist())
    if kind == "phash":
        return phash_split_names(images, digests)
    return [split_name(d) for d in digests]


def split_name(content_digest: str) -> str:
    """'train', 'val' or 'test' from a file's content hash: stable across runs, machines and orderings."""
    u = int(content_digest[:12], 16) / 16**12
    if u < TEST_SHARE:
        return "test"
    return "val" if u < TEST_SHARE + (1 - TEST_SHARE) * VAL_SHARE else "train"


def average_hash(images: np.ndarray) -> np.ndarray:
    """8x8 average hash of each (N, H, W, 3) uint8 image: (N, 64) bool (grey, area-resized, > its mean)."""
    from PIL import Image

    out = np.empty((len(images), 64), bool)
    for i, image in enumerate(images):
        small = np.asarray(Image.fromarray(image).convert("L").resize((8, 8), Image.Resampling.BOX), float)
        out[i] = (small > small.mean()).reshape(-1)
    return out


def phash_groups(images: np.ndarray, max_distance: int = PHASH_DISTANCE, digests=None) -> np.ndarray:
    """Group id per image: images whose hashes differ in <= max_distance bits are joined (connected
    components of the "close" graph), numbered by each group's first image. Rows with the same file
    `digests` are joined too: the two eye crops of one photo look nothing alike but are one photo."""
    bits = average_hash(images).astype(np.uint8)
    rows, cols = [], []
    first_row: dict = {}
    for i, digest in enumerate(digests if digests is not None else ()):
        rows.append(first_row.setdefault(digest, i))
        cols.append(i)
    for i in range(len(bits) - 1):  # Hamming distance to every later image, one row at a time
        close = np.flatnonzero((bits[i + 1:] != bits[i]).sum(1) <= max_distance) + i + 1
        rows += [i] * len(close)
        cols += close.tolist()
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(bits), len(bits)))
    _, labels = connected_components(graph, directed=False)
    first = {}
    return np.array([first.setdefault(label, i) for i, label in enumerate(labels)])


def phash_split_names(images: np.ndarray, digests: list[str], max_distance: int = PHASH_DISTANCE) -> list[str]:
    """Like split_name, but every near-duplicate group goes to one split (keyed by its smallest hash)."""
    groups = phash_groups(images, max_distance, digests)
    smallest: dict = {}
    for group, digest in zip(groups, digests):
        smallest[group] = min(smallest.get(group, digest), digest)
    return grouped_split_names([smallest[g] for g in groups])


def grouped_split_names(keys) -> list[str]:
    """Like split_name, but rows with the same key (a person, a near-duplicate scene) share a split.

    Groups are ordered by the hash of their key and dealt out until each split has its share of
    rows: hashing groups one by one would leave the shares to chance (with 200 persons of 10 photos,
    validation got 90 photos instead of 162)."""
    keys = [str(k) for k in keys]
    sizes: dict[str, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    bounds = (("test", TEST_SHARE), ("val", TEST_SHARE + (1 - TEST_SHARE) * VAL_SHARE))
    assigned, done = {}, 0
    for key in sorted(sizes, key=lambda k: hashlib.sha1(k.encode()).hexdigest()):
        assigned[key] = next((name for name, bound in bounds if done < bound * len(keys)), "train")
        done += sizes[key]
    return [assigned[key] for key in keys]


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
