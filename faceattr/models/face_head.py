"""Backbone `dlib-resnet`: dlib's pretrained face descriptor (faceattr/features), frozen, with a small
trained Keras head: descriptor (128) -> [dense + dropout per `model.head` width] -> the task's output.

The descriptor is computed outside Keras (dlib, from the photo at full resolution, cached by
content), so the Keras model takes `descriptor` instead of `image`; the served model computes it from
each photo the same way (faceattr/serving/model.py). `head: auto` is no hidden layer: identity then
answers from one sigmoid unit on the features (the seeds' MobileNetV2 head), gender from the same
two-way softmax the gender CNN answers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from faceattr.features.face_descriptor import DIMENSIONS
from faceattr.models import inputs

NAMES = ("dlib-resnet",)
READS = inputs.DESCRIPTOR     # the model's input (models.input_kind)
# What `-P model.backbone=dlib-resnet` starts from when it switches an experiment of another backbone here.
# A head on frozen face descriptors (a few hundred weights) learns at 1e-2: at the CNNs' 1e-3, early stopping
# ended identity runs on synthetic persons at ROC AUC 0.84 where 1e-2 reached 1.0 (40 epochs).
SWITCH_DEFAULTS = {"model": {"head": "auto", "dropout": 0.2}, "train": {"learning_rate": 0.01}}


class Schema(BaseModel):
    """`model:` of dlib's pretrained face descriptor, frozen, and a trained head."""
    model_config = ConfigDict(strict=True, extra="forbid")
    backbone: Literal["dlib-resnet"]
    head: Literal["auto"] | list[Annotated[int, Field(gt=0)]] = "auto"   # auto: no hidden layer (the seeds' one unit)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25


def head_widths(model: dict) -> list[int]:
    return [] if model["head"] == "auto" else list(model["head"])


def build(model: dict, region: str, name: str, task):
    from keras import layers

    # The descriptor has about unit length, so each component is ~1/sqrt(128): scaled by sqrt(128) the
    # components are ~unit sized and Adam's default steps move the head at the pace they move a CNN.
    return build_head(READS, model, region, name, task, layers.Rescaling(DIMENSIONS ** 0.5, name="unit_scale"))


def build_head(kind, model: dict, region: str, name: str, task, scale):
    """kind's row -> `scale` (a layer making its components ~unit sized) -> the head -> the task's output;
    `model.l2` (when the schema has it) weighs an L2 penalty on the output layer's weights."""
    import keras
    from keras import layers

    features = keras.Input(kind.shape(region), name=kind.name)
    named = {kind.name: features}
    x = scale(features)
    if task.reads_gender:   # a regression's second input, [p_male, p_female], beside the features
        named["gender"] = keras.Input((2,), name="gender")
        x = layers.Concatenate(name="with_gender")([x, named["gender"]])
    for i, units in enumerate(head_widths(model)):
        x = layers.Dense(units, activation="relu", name=f"fc_{i}")(x)
        x = layers.Dropout(model["dropout"], name=f"fc_{i}_dropout")(x)
    penalty = keras.regularizers.L2(model["l2"]) if model.get("l2") else None
    out = layers.Dense(task.output.units, activation=task.output.activation, name=task.output.layer,
                       kernel_regularizer=penalty)(x)
    return keras.Model(named, out, name=name)


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
