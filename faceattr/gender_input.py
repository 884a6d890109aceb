"""The regressions' gender input, decided here only: a row's own label or probability, the gender
model on the photo's face, or 'unknown' [0.5, 0.5]. Training, promotion, serving and batch scoring
all call `gender_probabilities`; `gender_inputs` picks the source for a training run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from faceattr import tasks
from faceattr.data.loading import unknown_gender, Data, gender_one_hot, has_gender_labels, shows_faces
from faceattr.data.manifest import GENDERS
from faceattr.errors import ConfigError, DataError
from faceattr.models import inputs


def gender_inputs(config: dict, data: Data, champion):
    """(N, 2) [p_male, p_female] for every row, a description of the source, and the gender model used.

    data.gender: `auto` (the default) tries the champion of the registered model `data.gender_model`
    (`champion(name)`: its version and served model, or None; the caller asks the registry), then the
    labels, then [0.5, 0.5]; `model`, `labels` and `unknown` insist on one source.
    """
    mode = config["data"]["gender"]
    unknown = unknown_gender(len(data.frame))
    fixed = tasks.of(config).gender_source()
    if fixed is not None:
        return unknown, fixed, None
    if mode in ("auto", "model") and shows_faces(data.frame):
        name = config["data"]["gender_model"]
        found = champion(name)
        if found is not None:
            version, gender = found
            return gender.gender_of_rows(data.frame), f"model:{name}/{version.version}", gender.model
    if mode == "model":
        raise ConfigError(f"data.gender=model: needs a registered gender model {config['data']['gender_model']!r} "
                          f"with alias 'champion' and images that show faces (whole photos with face boxes, or "
                          f"face crops)")
    if mode in ("auto", "labels") and has_gender_labels(data.frame):
        return gender_one_hot(data.frame), "labels", None
    if mode == "labels":
        raise ConfigError("data.gender=labels: the data set has no complete `gender` column")
    return unknown, "unknown", None


def gender_model_probabilities(gender_model, faces: np.ndarray) -> np.ndarray:
    """(N, 2) [p_male, p_female] of a gender model on what it reads of N faces: (N, 60, 60, 3) face crops
    or (N, 128) face descriptors."""
    faces = np.asarray(faces, np.float32)
    return np.asarray(gender_model.predict_on_batch({inputs.of_model(gender_model).name: faces}), np.float32)


def rows_gender(gender_model, frame: pd.DataFrame) -> np.ndarray:
    """A gender model's [p_male, p_female] for manifest rows (whole photos with face boxes, or face
    crops); a row whose face it cannot read gets the "unknown" [0.5, 0.5]."""
    found, kept = inputs.of_model(gender_model).of_rows(frame)
    out = unknown_gender(len(frame))
    if kept.any():
        out[kept] = gender_model_probabilities(gender_model, found[kept])
    return out


def row_gender(row: dict) -> tuple[float, float] | None:
    """A row's own gender input: its `gender` (male/female) or `p_female` (0..1), else None.
    DataError names the bad value."""
    label, p = row.get("gender"), row.get("p_female")
    if isinstance(label, str) and label:
        if label.lower() not in GENDERS:
            raise DataError(f"gender={label!r}; use male or female")
        return tuple(np.eye(2)[GENDERS.index(label.lower())])
    if p is not None and not pd.isna(p):
        if not 0 <= float(p) <= 1:
            raise DataError(f"p_female={p!r} is outside 0..1")
        return 1 - float(p), float(p)
    return None


def gender_probabilities(rows: pd.DataFrame, faces: list, gender_model=None) -> np.ndarray:
    """Each row's gender input: its `gender` (male/female) or `p_female` column, else `gender_model` on
    its face crop (`faces[i]`, None when the photo has none), else the "unknown" [0.5, 0.5].
    DataError names the row of a bad value."""
    out = unknown_gender(len(rows))
    ask = []
    for i, row in enumerate(rows.to_dict("records")):
        try:
            given = row_gender(row)
        except DataError as exc:
            raise DataError(f"row {i}: {exc}") from exc
        if given is not None:
            out[i] = given
        elif faces[i] is not None and gender_model is not None:
            ask.append(i)
    if ask:
        out[ask] = gender_model_probabilities(gender_model, np.stack([faces[i] for i in ask]))
    return out
