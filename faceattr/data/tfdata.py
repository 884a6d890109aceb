"""Model inputs: a split's arrays as the named inputs a model takes, and the tf.data pipeline."""

from __future__ import annotations

import numpy as np

from faceattr.data import augment as augmentation
from faceattr.data.loading import WEIGHT, Split


def model_inputs(split: Split, with_gender: bool) -> dict[str, np.ndarray]:
    """The arrays a model's named inputs take (regressions also read the gender probability)."""
    name, values = split.model_input
    inputs = {name: values.astype(np.float32)}
    return {**inputs, "gender": split.gender} if with_gender else inputs


def to_tf_dataset(split: Split, batch_size: int, with_gender: bool, shuffle_seed: int | None = None,
                  augment=False, class_weight: dict[int, float] | None = None):
    """Cached, (optionally) shuffled, batched, prefetched tf.data pipeline of ({image[, gender]}, label).

    `augment` (`train.augment`, training split only): see faceattr/data/augment.py; it changes
    pixels, so the caller passes it only for an input kind that augments (models/inputs.py).
    `class_weight` ({0: w0, 1: w1}): each row also carries its class's weight (validation judged by
    the same balanced loss the training split is fitted with), times its data set's `weight` (several
    sets: data/loading.read_sets).
    """
    import tensorflow as tf

    name, values = split.model_input
    inputs = {name: values, "gender": split.gender} if with_gender else {name: values}
    columns = (inputs, split.labels)
    if class_weight or WEIGHT in split.frame:
        weights = split.frame[WEIGHT].to_numpy(np.float32) if WEIGHT in split.frame else np.ones(len(split), np.float32)
        if class_weight:
            weights = weights * np.where(np.asarray(split.labels).reshape(-1) >= 0.5, class_weight[1], class_weight[0])
        columns = (inputs, split.labels, weights.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(columns).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    # uint8 is cached (4x less memory); the cast to float happens per batch
    ds = ds.map(lambda x, *rest: ({**x, name: tf.cast(x[name], tf.float32)}, *rest),
                num_parallel_calls=tf.data.AUTOTUNE)
    switches = augmentation.switches(augment)
    if switches:
        ds = ds.map(lambda x, *rest: ({**x, name: augmentation.augment(x[name], switches, shuffle_seed)}, *rest),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
