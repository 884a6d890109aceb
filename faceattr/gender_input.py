"""Where a regression's gender input comes from: the registered gender model, the labels, or 'unknown'."""

from __future__ import annotations

import numpy as np

from faceattr import registry
from faceattr.data.loading import UNKNOWN_GENDER, Data, gender_one_hot, has_gender_labels
from faceattr.data.pipeline import load_crops
from faceattr.errors import ConfigError


def shows_faces(data: Data) -> bool:
    """Whether a face crop can be cut from every image (whole photos with face boxes, or face crops)."""
    frame = data.frame
    photos = (frame["image_region"] == "photo").all() and "face_box" in frame and frame["face_box"].notna().all()
    return bool(photos or (frame["image_region"] == "face").all())


def gender_inputs(config: dict, data: Data):
    """(N, 2) [p_male, p_female] for every row, a description of the source, and the gender model used.

    data.gender: `auto` (the default) tries `models:/gender@champion`, then the labels, then
    [0.5, 0.5]; `model`, `labels` and `unknown` insist on one source.
    """
    mode = config["data"]["gender"]
    unknown = np.tile(np.asarray(UNKNOWN_GENDER, np.float32), (len(data.frame), 1))
    if config["task"] == "classification":
        return unknown, "none (gender is the target)", None
    if mode in ("auto", "model") and shows_faces(data):
        version = registry.champion("gender")
        if version is not None:
            gender = registry.load_faceattr_model(f"models:/gender@{registry.CHAMPION}")
            faces, _ = load_crops(data.frame, "face")
            p = gender.model.predict(faces.astype(np.float32), batch_size=256, verbose=0)
            return p.astype(np.float32), f"model:gender/{version.version}", gender.model
    if mode == "model":
        raise ConfigError("data.gender=model: needs a registered gender model with alias 'champion' "
                          "and images that show faces (whole photos with face boxes, or face crops)")
    if mode in ("auto", "labels") and has_gender_labels(data.frame):
        return gender_one_hot(data.frame), "labels", None
    if mode == "labels":
        raise ConfigError("data.gender=labels: the data set has no complete `gender` column")
    return unknown, "unknown", None
