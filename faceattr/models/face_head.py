"""Backbone `dlib-resnet`: dlib's pretrained face descriptor (faceattr/features), frozen, with a small
trained Keras head: descriptor (128) -> [dense + dropout per `model.head` width] -> the task's output.

The descriptor is computed outside Keras (dlib, from the photo at full resolution, cached by
content), so the Keras model takes `descriptor` instead of `image`; the served model computes it from
each photo the same way (faceattr/serving/model.py). `head: auto` is no hidden layer: identity then
answers from one sigmoid unit on the features (the seeds' MobileNetV2 head), gender from the same
two-way softmax the gender CNN answers.
"""

from __future__ import annotations

import keras
from keras import layers

from faceattr.features.face_descriptor import DIMENSIONS
from faceattr.models import inputs

READS = inputs.DESCRIPTOR     # the model's input (models.input_kind)


def head_widths(model: dict) -> list[int]:
    return [] if model["head"] == "auto" else list(model["head"])


def build(model: dict, region: str, name: str, task) -> keras.Model:
    descriptor = keras.Input((DIMENSIONS,), name=inputs.DESCRIPTOR.name)
    # The descriptor has about unit length, so each component is ~1/sqrt(128): scaled by sqrt(128) the
    # components are ~unit sized and Adam's default steps move the head at the pace they move a CNN.
    x = layers.Rescaling(DIMENSIONS ** 0.5, name="unit_scale")(descriptor)
    for i, units in enumerate(head_widths(model)):
        x = layers.Dense(units, activation="relu", name=f"fc_{i}")(x)
        x = layers.Dropout(model["dropout"], name=f"fc_{i}_dropout")(x)
    out = layers.Dense(task.output.units, activation=task.output.activation, name=task.output.layer)(x)
    return keras.Model({inputs.DESCRIPTOR.name: descriptor}, out, name=name)


def describe(model: dict) -> str:
    """e.g. 'dlib-resnet' (no hidden layer) or 'dlib-resnet-fc64'."""
    widths = head_widths(model)
    return "dlib-resnet" + (f"-fc{'-'.join(map(str, widths))}" if widths else "")


def declare(hp, model: dict, search: dict) -> None:
    """The hidden layer's width (`search.head`)."""
    if search["head"]:
        hp.Choice("head", sorted(set(search["head"])))


def apply(model: dict, values: dict) -> None:
    if "head" in values:       # one width for every head layer (one layer when the head had none)
        model["head"] = [int(values["head"])] * (len(head_widths(model)) or 1)
