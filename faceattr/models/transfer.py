"""Transfer-learning models for the identity task ("is this photo person X?"): a keras.applications
backbone (MobileNetV2 or VGG16) plus the seeds' trainable head. Pure Keras 3.

The model takes the experiment region's crop as float pixels 0..255 (like the seed CNNs, so serving
and the tf.data pipeline are shared), resizes it to `model.input_size` and applies the backbone's own
preprocessing inside the graph.

`model.weights`:
- `imagenet`: keras' own download of the ImageNet weights (needs internet once; cached in ~/.keras);
- a path to a weights file (`.weights.h5` saved from the same backbone, or keras' `..._no_top.h5`);
- `none`: random initialisation.
With weights the backbone is frozen (transfer learning, only the head trains); with `none` it trains.
`model.trainable: true|false` overrides that.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from faceattr.data.regions import REGION_SIZES
from faceattr.errors import FaceattrError
from faceattr.models import inputs

NAMES = ("mobilenetv2", "vgg16")
READS = inputs.IMAGE
SWITCH_DEFAULTS: dict = {}   # identity's YAML names its transfer settings
MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
NO_WEIGHTS = (None, "none", "None", "")
# The seeds' heads: VGG16 fc 2048-2048 with dropout 0.5 on the flattened features; MobileNetV2 one
# dense unit on the 1280-d average-pooled features (1,281 parameters).
SEED_HEADS = {"vgg16": {"head": [2048, 2048], "pooling": "flatten"},
              "mobilenetv2": {"head": [], "pooling": "avg"}}
# keras.applications' MobileNetV2 keeps batch-norm statistics with momentum 0.999 (made for ImageNet's
# hundreds of thousands of steps). From scratch on a few hundred photos (~60 steps), the statistics used
# at inference stayed ~94% their initial values and every photo got the same prediction (equal to 1e-7);
# 0.9 (the Keras default) follows the data within ~20 steps.
SCRATCH_BN_MOMENTUM = 0.9


def alpha_choice(value: float) -> float:
    if value not in MOBILENET_ALPHAS:
        raise ValueError(f"must be one of {', '.join(map(str, MOBILENET_ALPHAS))}")
    return value


def _weights(value: str | None) -> str | None:
    if value not in NO_WEIGHTS and value != "imagenet" and not Path(value).expanduser().is_file():
        raise ValueError(f"no weights file {value!r} (use imagenet, none or an existing .weights.h5)")
    return value


class Schema(BaseModel):
    """`model:` of a keras.applications backbone and a trained head."""
    model_config = ConfigDict(strict=True, extra="forbid")
    backbone: Literal[NAMES]
    weights: Annotated[str | None, AfterValidator(_weights)]   # imagenet | none | a .weights.h5 path
    input_size: Literal["auto"] | Annotated[int, Field(ge=32)] = "auto"
    alpha: Annotated[float, AfterValidator(alpha_choice)] = 1.0
    head: Literal["auto"] | list[Annotated[int, Field(gt=0)]] = "auto"
    pooling: Literal["auto", "avg", "max", "flatten"] = "auto"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25
    trainable: Literal["auto"] | bool = "auto"


@functools.cache
def register_layers():
    """Register faceattr's own Keras layers (VGG16's CaffePreprocess), once, before a model using them is
    built or loaded (serving/model.py); returns them by name. Defined here, not at import, so reading a
    config does not import Keras."""
    import keras

    @keras.saving.register_keras_serializable(package="faceattr")
    class CaffePreprocess(keras.layers.Layer):
        """VGG16's ImageNet preprocessing as a layer (RGB -> BGR, minus the ImageNet channel means)."""

        MEAN_BGR = (103.939, 116.779, 123.68)

        def call(self, inputs):
            bgr = keras.ops.flip(inputs, axis=-1)
            return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=bgr.dtype)

    return {"CaffePreprocess": CaffePreprocess}


def resolved(model: dict) -> dict:
    """The model section with every `auto` filled in (seed head, input size, trainability)."""
    out = dict(model)
    backbone = out["backbone"]
    weights = None if out["weights"] in NO_WEIGHTS else out["weights"]
    out["weights"] = weights
    for key in ("head", "pooling"):
        if out[key] == "auto":
            out[key] = SEED_HEADS[backbone][key]
    if out["input_size"] == "auto":
        out["input_size"] = 224 if weights == "imagenet" else 96
    if out["trainable"] == "auto":
        out["trainable"] = weights is None
    return out


def describe(model: dict) -> str:
    """Short architecture name for run names/tags, e.g. 'mobilenetv2-96-none', 'mobilenetv2x0.5-96-none-fc256'."""
    m = resolved(model)
    weights = "none" if m["weights"] is None else ("imagenet" if m["weights"] == "imagenet" else "file")
    width = f"x{m['alpha']:g}" if m["backbone"] == "mobilenetv2" and m["alpha"] != 1.0 else ""
    head = f"-fc{'-'.join(map(str, m['head']))}" if m["head"] != SEED_HEADS[m["backbone"]]["head"] else ""
    return f"{m['backbone']}{width}-{m['input_size']}-{weights}{head}"


def backbone(model: dict):
    """The keras.applications network without its top, with the weights `model.weights` names."""
    import keras
    from keras import layers

    m = resolved(model)
    size = m["input_size"]
    kwargs = {"include_top": False, "input_shape": (size, size, 3), "pooling": None}
    if m["backbone"] == "mobilenetv2":
        constructor = keras.applications.MobileNetV2
        kwargs["alpha"] = m["alpha"]
    else:
        constructor = keras.applications.VGG16
    if m["weights"] == "imagenet":
        try:
            return constructor(weights="imagenet", **kwargs)
        except Exception as exc:  # no internet: keras' get_file raises (URL fetch failure, ...)
            raise FaceattrError(
                f"model.weights=imagenet: could not get the ImageNet weights of {m['backbone']} through "
                f"keras' download ({type(exc).__name__}: {exc}). Without internet pass a local weights file "
                f"(-P weights=/path/to/{m['backbone']}.weights.h5) or train from scratch with -P weights=none"
            ) from exc
    net = constructor(weights=None, **kwargs)
    if m["weights"] is None:
        for layer in net.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    else:
        path = Path(m["weights"]).expanduser()
        try:
            net.load_weights(str(path))
        except Exception as exc:
            raise FaceattrError(f"model.weights={m['weights']}: cannot load it into {m['backbone']} "
                                f"(input {size}, alpha {m['alpha']}): {exc}") from exc
    return net


def build(model: dict, region: str, name: str, task):
    """crop (region size, 0..255) -> resize -> backbone preprocessing -> backbone -> head -> the task's output."""
    import keras
    from keras import layers

    m = resolved(model)
    height, width = REGION_SIZES[region]
    size = m["input_size"]
    image = keras.Input((height, width, 3), name="image")
    x = image
    if (height, width) != (size, size):
        x = layers.Resizing(size, size, name="resize")(x)
    if m["backbone"] == "mobilenetv2":
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
    else:
        x = register_layers()["CaffePreprocess"](name="preprocess")(x)
    net = backbone(model)
    net.trainable = bool(m["trainable"])
    # a frozen backbone runs in inference mode (batch-norm statistics stay the pretrained ones)
    x = net(x, training=False) if not m["trainable"] else net(x)
    pooling = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
               "flatten": layers.Flatten}[m["pooling"]]
    x = pooling(name="pool")(x)
    for i, units in enumerate(m["head"]):
        x = layers.Dense(units, activation="relu", name=f"fc_{i}")(x)
        x = layers.Dropout(m["dropout"], name=f"fc_{i}_dropout")(x)
    out = layers.Dense(task.output.units, activation=task.output.activation, name=task.output.layer)(x)
    return keras.Model({"image": image}, out, name=name)


def declare(hp, model: dict, search: dict) -> None:
    """MobileNetV2's width (`search.alpha`) and the head's layer width (`search.head`)."""
    if search["alpha"] and model["backbone"] == "mobilenetv2":
        hp.Choice("alpha", sorted(set(float(v) for v in search["alpha"])))
    if search["head"]:
        hp.Choice("head", sorted(set(search["head"])))


def apply(model: dict, values: dict) -> None:
    """Put chosen values (hp values) into `model`, in place."""
    if "alpha" in values:
        model["alpha"] = float(values["alpha"])
    if "head" in values:       # one width for every head layer (the seeds' VGG16 head: 2048-2048)
        model["head"] = [int(values["head"])] * (len(resolved(model)["head"]) or 1)
