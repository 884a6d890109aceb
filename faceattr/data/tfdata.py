"""Model inputs: a split's arrays as the named inputs a model takes, and the tf.data pipeline."""

from __future__ import annotations

import numpy as np

from faceattr.data import augment as augmentation
from faceattr.data.loading import Split


def model_inputs(split: Split, with_gender: bool) -> dict[str, np.ndarray]:
    """The arrays a model's named inputs take (regressions also read the gender probability)."""
    images = split.images.astype(np.float32)
    return {"image": images, "gender": split.gender} if with_gender else {"image": images}


def to_tf_dataset(split: Split, batch_size: int, with_gender: bool, shuffle_seed: int | None = None,
                  augment=False):
    """Cached, (optionally) shuffled, batched, prefetched tf.data pipeline of ({image[, gender]}, label).

    `augment` (`train.augment`, training split only): see faceattr/data/augment.py.
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
    spec = augmentation.switches(augment)
    if spec:
        ds = ds.map(lambda x, y: ({**x, "image": augmentation.augment(x["image"], spec, shuffle_seed)}, y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
