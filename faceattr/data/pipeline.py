"""From a validated manifest to model inputs: stable splits, decoded crops, tf.data pipelines."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from faceattr.data.regions import crop_region, load_rgb, parse_box

TEST_SHARE = 0.10       # held out: never trained on, never used for early stopping
VAL_SHARE = 0.10        # of the rest: the seeds' 90/10 train/validation split


@dataclass
class Split:
    """One split's model inputs and labels."""
    images: np.ndarray      # (N, H, W, 3) uint8
    gender: np.ndarray      # (N, 2) float32: [p_male, p_female] fed to regressions
    labels: np.ndarray      # (N,) float32 for regressions, (N, 2) one-hot for gender
    frame: pd.DataFrame     # the manifest rows, same order

    def __len__(self) -> int:
        return len(self.labels)


def split_name(content_digest: str) -> str:
    """'train', 'val' or 'test' from a file's content hash: stable across runs, machines and orderings."""
    u = int(content_digest[:12], 16) / 16**12
    if u < TEST_SHARE:
        return "test"
    return "val" if u < TEST_SHARE + (1 - TEST_SHARE) * VAL_SHARE else "train"


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


def model_inputs(split: Split, with_gender: bool) -> dict[str, np.ndarray]:
    """The arrays a model's named inputs take (regressions also read the gender probability)."""
    images = split.images.astype(np.float32)
    return {"image": images, "gender": split.gender} if with_gender else {"image": images}


def to_tf_dataset(split: Split, batch_size: int, with_gender: bool, shuffle_seed: int | None = None):
    """Cached, (optionally) shuffled, batched, prefetched tf.data pipeline of ({image[, gender]}, label)."""
    import tensorflow as tf

    inputs = {"image": split.images, "gender": split.gender} if with_gender else {"image": split.images}
    ds = tf.data.Dataset.from_tensor_slices((inputs, split.labels)).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    # uint8 is cached (4x less memory); the cast to float happens per batch
    ds = ds.map(lambda x, y: ({**x, "image": tf.cast(x["image"], tf.float32)}, y),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
