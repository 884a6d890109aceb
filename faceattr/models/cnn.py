"""The seed CNNs (backbone `cnn`): five 3x3 convolutions, `dense_0`, [the gender probability, `dense_1`],
then the task's output layer. Exactly the seeds' parameter counts at the seed widths.

Takes `image` as float pixels 0..255 (rescaled inside, so a served model takes raw pixels).
The backbone declares itself here: its `model:` schema (`Schema`), input kind (the crop, `READS`) and
search space (`declare` / `apply`). Keras is imported when a model is built, not when a config is read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from faceattr.data.regions import REGION_SIZES
from faceattr.models import inputs

NAMES = ("cnn",)            # the `model.backbone` values this module builds
READS = inputs.IMAGE        # the region's crop
SWITCH_DEFAULTS: dict = {}  # none: an experiment of another backbone names its own widths to switch here


class Conv(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    filters: Annotated[int, Field(gt=0)]
    padding: Literal["same", "valid"] = "valid"
    pool: bool = False


class Schema(BaseModel):
    """`model:` of the seeds' CNNs."""
    model_config = ConfigDict(strict=True, extra="forbid")
    backbone: Literal["cnn"] = "cnn"
    conv: Annotated[list[Conv], Field(min_length=1)]
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25
    dense_0: Annotated[int, Field(gt=0)]
    dense_1: Annotated[int, Field(gt=0)] | None = None   # the regressions': after the gender input


def conv_stack(x, conv: list[dict], dropout: float):
    """3x3 ReLU convolutions; `pool` adds 2x2 max-pooling after a layer; dropout before flattening."""
    from keras import layers

    for i, layer in enumerate(conv):
        x = layers.Conv2D(layer["filters"], 3, padding=layer["padding"],
                          activation="relu", name=f"conv_{i}")(x)
        if layer["pool"]:
            x = layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    x = layers.Dropout(dropout, name="conv_dropout")(x)
    return layers.Flatten(name="flatten")(x)


def image_input(region: str):
    import keras
    from keras import layers

    height, width = REGION_SIZES[region]
    image = keras.Input((height, width, 3), name="image")
    return image, layers.Rescaling(1 / 255.0, name="rescale")(image)


def build(model: dict, region: str, name: str, task):
    """image -> conv stack -> dense_0 -> [concat gender (N, 2) -> dense_1] -> the task's output layer."""
    import keras
    from keras import layers

    image, x = image_input(region)
    inputs = {"image": image}
    x = conv_stack(x, model["conv"], model["dropout"])
    x = layers.Dense(model["dense_0"], activation="relu", name="dense_0")(x)
    x = layers.Dropout(model["dropout"], name="dense_0_dropout")(x)
    if task.reads_gender:
        inputs["gender"] = keras.Input((2,), name="gender")
        x = layers.Concatenate(name="with_gender")([x, inputs["gender"]])
        x = layers.Dense(model["dense_1"], activation="relu", name="dense_1")(x)
    out = layers.Dense(task.output.units, activation=task.output.activation, name=task.output.layer)(x)
    return keras.Model(inputs, out, name=name)


def describe(model: dict) -> str:
    """The widths in one short string, e.g. '32-48-64-96-128/320/120'."""
    dense = [str(model[k]) for k in ("dense_0", "dense_1") if model[k] is not None]
    return "/".join(["-".join(str(layer["filters"]) for layer in model["conv"]), *dense])


def declare(hp, model: dict, search: dict) -> None:
    """The widths `search` names: filters per conv layer, dense_0, dense_1 (when the model has it)."""
    for i, choices in enumerate(search["filters"] or []):
        hp.Choice(f"filters_{i}", sorted(set(choices)))
    for key in ("dense_0", "dense_1"):
        if search[key] and model[key] is not None:
            hp.Choice(key, sorted(set(search[key])))


def apply(model: dict, values: dict) -> None:
    """Put chosen widths (hp values) into `model`, in place."""
    for i, layer in enumerate(model["conv"]):
        if f"filters_{i}" in values:
            layer["filters"] = int(values[f"filters_{i}"])
    for key in ("dense_0", "dense_1"):
        if key in values:
            model[key] = int(values[key])
