"""The seed CNNs: a regression that also reads the gender probability, and the gender classifier.

Both take `image` as float pixels 0..255 (rescaled inside, so a served model takes raw pixels).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from faceattr.data.regions import REGION_SIZES


def conv_stack(x, conv: list[dict], dropout: float):
    """3x3 ReLU convolutions; `pool` adds 2x2 max-pooling after a layer; dropout before flattening."""
    for i, layer in enumerate(conv):
        x = layers.Conv2D(layer["filters"], 3, padding=layer.get("padding", "valid"),
                          activation="relu", name=f"conv_{i}")(x)
        if layer.get("pool", False):
            x = layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    x = layers.Dropout(dropout, name="conv_dropout")(x)
    return layers.Flatten(name="flatten")(x)


def image_input(region: str):
    height, width = REGION_SIZES[region]
    image = keras.Input((height, width, 3), name="image")
    return image, layers.Rescaling(1 / 255.0, name="rescale")(image)


def build_regression(model: dict, region: str, name: str) -> keras.Model:
    """image -> conv stack -> dense_0 -> [concat gender (N, 2)] -> dense_1 -> dense_final (linear).

    The output is linear: a sigmoid under MSE saturates on labels that are mostly 1.0 (eyes) and the
    model collapses to a constant within the first epoch. Predictions are clipped with `to_unit_range`.
    """
    image, x = image_input(region)
    gender = keras.Input((2,), name="gender")
    x = conv_stack(x, model["conv"], model["dropout"])
    x = layers.Dense(model["dense_0"], activation="relu", name="dense_0")(x)
    x = layers.Dropout(model["dropout"], name="dense_0_dropout")(x)
    x = layers.Concatenate(name="with_gender")([x, gender])
    x = layers.Dense(model["dense_1"], activation="relu", name="dense_1")(x)
    out = layers.Dense(1, name="dense_final")(x)
    return keras.Model({"image": image, "gender": gender}, out, name=name)


def build_classifier(model: dict, region: str, name: str) -> keras.Model:
    """image -> conv stack -> dense_0 -> softmax over (male, female)."""
    image, x = image_input(region)
    x = conv_stack(x, model["conv"], model["dropout"])
    x = layers.Dense(model["dense_0"], activation="relu", name="dense_0")(x)
    x = layers.Dropout(model["dropout"], name="dense_0_dropout")(x)
    out = layers.Dense(2, activation="softmax", name="gender_probability")(x)
    return keras.Model({"image": image}, out, name=name)


def to_unit_range(predictions) -> np.ndarray:
    """A regression's raw outputs as the values it reports: one per photo, clipped to 0..1."""
    return np.clip(np.asarray(predictions, np.float64).reshape(-1), 0.0, 1.0)


def build(config: dict) -> keras.Model:
    """The model an experiment config describes."""
    if config["task"] == "identity":
        from faceattr.models.transfer import build_identity

        return build_identity(config)
    builder = build_regression if config["task"] == "regression" else build_classifier
    return builder(config["model"], config["region"], config["name"])
