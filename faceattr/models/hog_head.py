"""Backbone `dlib-resnet-hog`: dlib's face descriptor and the HOG of the model's region (models/inputs.py
DESCRIPTOR_HOG), both computed outside Keras, with the `dlib-resnet` head trained on them.

Why: glasses. The descriptor is made to ignore them (94.5% on LFW portraits, 5-fold) and a CNN from
scratch on the eye band misses thin rims (91-96% over seeds); the descriptor with the HOG of the eye band
cut at 48x90 reads them at 97.1% (features/hog.py). With ~1,900 features for ~2,200 training photos, the head
has no hidden layer by default and an L2 penalty on its weights (`l2`), as a logistic regression would.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from faceattr.features import hog
from faceattr.features.face_descriptor import DIMENSIONS
from faceattr.models import face_head, inputs
from faceattr.models.face_head import head_widths

NAMES = ("dlib-resnet-hog",)
READS = inputs.DESCRIPTOR_HOG
declare, apply = face_head.declare, face_head.apply   # what `faceattr tune` may vary: the head's width, as dlib-resnet
SWITCH_DEFAULTS = {"model": {"head": "auto", "dropout": 0.2, "l2": 0.1}, "train": {"learning_rate": 0.01}}


class Schema(face_head.Schema):
    """`model:` of dlib's face descriptor and the region's HOG, with a trained head."""
    backbone: Literal["dlib-resnet-hog"]
    l2: Annotated[float, Field(ge=0)] = 0.1   # the L2 penalty on the output layer's weights (see SWITCH_DEFAULTS)


def build(model: dict, region: str, name: str, task):
    from keras import layers

    # Each part's components made ~unit sized: the descriptor's by sqrt(128) (as face_head does), the HOG's
    # by its blocks' length (hog.UNIT_SCALE): a fixed variance per feature, not one learnt from the data.
    variance = np.concatenate([np.full(DIMENSIONS, 1.0 / DIMENSIONS), np.full(hog.length(region), hog.UNIT_SCALE ** -2)])
    scale = layers.Normalization(mean=np.zeros_like(variance), variance=variance, name="unit_scale")
    return face_head.build_head(READS, model, region, name, task, scale)


def describe(model: dict) -> str:
    """e.g. 'dlib-resnet-hog' (no hidden layer) or 'dlib-resnet-hog-fc64'."""
    widths = head_widths(model)
    return "dlib-resnet-hog" + (f"-fc{'-'.join(map(str, widths))}" if widths else "")
