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


PHASH_DISTANCE = 4      # 8x8 average hashes this close (of 64 bits) count as the same scene (6 chains
                        # 54% of yawn-mouth into one group; 4: largest group 12%, eye-state 1%)


def average_hash(images: np.ndarray) -> np.ndarray:
    """8x8 average hash of each (N, H, W, 3) uint8 image: (N, 64) bool (grey, area-resized, > its mean)."""
    from PIL import Image

    out = np.empty((len(images), 64), bool)
    for i, image in enumerate(images):
        small = np.asarray(Image.fromarray(image).convert("L").resize((8, 8), Image.Resampling.BOX), float)
        out[i] = (small > small.mean()).reshape(-1)
    return out


def phash_groups(images: np.ndarray, max_distance: int = PHASH_DISTANCE) -> np.ndarray:
    """Group id per image: images whose hashes differ in <= max_distance bits are joined (union-find)."""
    bits = average_hash(images).astype(np.uint8)
    parent = np.arange(len(bits))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(bits) - 1):  # Hamming distance to every later image, one row at a time
        close = np.flatnonzero((bits[i + 1:] != bits[i]).sum(1) <= max_distance) + i + 1
        for j in close:
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(len(bits))])


def phash_split_names(images: np.ndarray, digests: list[str], max_distance: int = PHASH_DISTANCE) -> list[str]:
    """Like split_name, but every near-duplicate group goes to one split (keyed by its smallest hash)."""
    groups = phash_groups(images, max_distance)
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


def to_tf_dataset(split: Split, batch_size: int, with_gender: bool, shuffle_seed: int | None = None,
                  augment: bool = False):
    """Cached, (optionally) shuffled, batched, prefetched tf.data pipeline of ({image[, gender]}, label).

    augment (`train.augment`, training split only): random horizontal flip, shifts of up to 8% and
    brightness/contrast changes of up to 15%, drawn anew each epoch.
    A mapping instead of true (`{flip: true, brightness: 0.15, ...}`) applies `augment_seeds`.
    """
    import tensorflow as tf

    inputs = {"image": split.images, "gender": split.gender} if with_gender else {"image": split.images}
    ds = tf.data.Dataset.from_tensor_slices((inputs, split.labels)).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    # uint8 is cached (4x less memory); the cast to float happens per batch
    ds = ds.map(lambda x, y: ({**x, "image": tf.cast(x["image"], tf.float32)}, y),
                num_parallel_calls=tf.data.AUTOTUNE)
    if isinstance(augment, dict):  # the seeds' switchable list (identity): see augment_seeds
        ds = ds.map(lambda x, y: ({**x, "image": augment_seeds(x["image"], augment, shuffle_seed)}, y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    elif augment:
        ds = ds.map(lambda x, y: ({**x, "image": _augment(x["image"], shuffle_seed)}, y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _augment(images, seed):
    """A float32 (B, H, W, 3) batch in 0..255 -> randomly flipped, shifted (edge pixels repeated), lit."""
    import tensorflow as tf

    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    flip = tf.random.uniform([n, 1, 1, 1], seed=seed) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    pad_h, pad_w = tf.cast(tf.cast(h, tf.float32) * 0.08, tf.int32), tf.cast(tf.cast(w, tf.float32) * 0.08, tf.int32)
    padded = tf.pad(images, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="SYMMETRIC")
    dy = tf.random.uniform([n], 0, 2 * pad_h + 1, dtype=tf.int32)
    dx = tf.random.uniform([n], 0, 2 * pad_w + 1, dtype=tf.int32)
    images = tf.map_fn(lambda a: a[0][a[1]:a[1] + h, a[2]:a[2] + w], (padded, dy, dx),
                       fn_output_signature=tf.float32)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    contrast = tf.random.uniform([n, 1, 1, 1], 0.85, 1.15)
    brightness = tf.random.uniform([n, 1, 1, 1], -0.15, 0.15) * 255.0
    return tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 255.0)


AUGMENT_SWITCHES = ("flip", "brightness", "contrast", "hue", "saturation", "noise")


def check_augment(spec: dict, fail) -> None:
    """Validate a `train.augment` mapping; `fail(key, why)` raises ConfigError."""
    for key, value in spec.items():
        name = f"train.augment.{key}"
        if key not in AUGMENT_SWITCHES:
            fail(name, f"unknown switch; known: {', '.join(AUGMENT_SWITCHES)}")
        if value is None or value is False:
            continue
        if key == "flip":
            if value is not True:
                fail(name, f"must be true or false, got {value!r}")
        elif key in ("contrast", "saturation"):
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or not 0 <= value[0] <= value[1]):
                fail(name, f"must be false or a range [low, high] of factors, 0 <= low <= high, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= (0.5 if key == "hue" else 1):
            fail(name, f"must be false or a number in [0, {0.5 if key == 'hue' else 1}], got {value!r}")


def augment_seeds(images, spec: dict, seed=None):
    """The seeds' augmentation, each switch optional, in their order, on a float32 (B, H, W, 3) batch in
    0..255; every photo draws its own amounts, anew each epoch:
    flip (random horizontal mirror), brightness (+-b, as a share of full scale), contrast (factor in
    [lo, hi] around each photo's per-channel mean), hue (+-h of the colour circle), saturation (factor
    in [lo, hi]), noise (Gaussian, std as a share of full scale). The maths is tf.image's
    (adjust_brightness/contrast/hue/saturation) on 0..1 pixels, vectorised per photo."""
    import tensorflow as tf

    x = images / 255.0
    n = tf.shape(x)[0]
    draws = iter(range(1, 10))  # one op seed per draw: ops sharing a seed would draw the same numbers

    def op_seed():
        return None if seed is None else seed * 10 + next(draws)

    def uniform(low, high):
        return tf.random.uniform([n, 1, 1, 1], low, high, seed=op_seed())

    if spec.get("flip"):
        x = tf.where(uniform(0.0, 1.0) < 0.5, tf.reverse(x, axis=[2]), x)
    if spec.get("brightness"):
        x = x + uniform(-float(spec["brightness"]), float(spec["brightness"]))
    if spec.get("contrast"):
        low, high = spec["contrast"]
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        x = (x - mean) * uniform(float(low), float(high)) + mean
    if spec.get("hue") or spec.get("saturation"):
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 1.0))
        h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
        if spec.get("hue"):
            h = tf.math.floormod(h + uniform(-float(spec["hue"]), float(spec["hue"])), 1.0)
        if spec.get("saturation"):
            low, high = spec["saturation"]
            s = tf.clip_by_value(s * uniform(float(low), float(high)), 0.0, 1.0)
        x = tf.image.hsv_to_rgb(tf.concat([h, s, v], axis=-1))
    if spec.get("noise"):
        x = x + tf.random.normal(tf.shape(x), stddev=float(spec["noise"]), seed=op_seed())
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0
