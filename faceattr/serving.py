"""The served model: an `mlflow.pyfunc` model that takes photos and returns values in 0..1.

A request is a table with one row per photo:
- `image`: the photo as a base64 JPEG/PNG string (required);
- `kind`: `crop` (a ready crop of the model's region, the default) or `photo` (a whole photo);
- `gender` (`male`/`female`) or `p_female` (0..1): the gender input of a regression, optional;
  without them the bundled gender model is used where it can be, else the "unknown" [0.5, 0.5].
Regressions answer one column named after the target; the gender model answers `p_female` and `gender`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from faceattr.data.manifest import GENDERS
from faceattr.data.regions import crop_region, load_rgb
from faceattr.errors import DataError
from faceattr.models.cnn import to_unit_range

KINDS = ("crop", "photo")


def signature(task: str, target: str) -> ModelSignature:
    """What a request holds and what the answer holds (shown in the model's page in `mlflow ui`)."""
    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "kind", required=False),
                     ColSpec("string", "gender", required=False), ColSpec("double", "p_female", required=False)])
    if task == "classification":
        outputs = Schema([ColSpec("double", "p_female"), ColSpec("string", "gender")])
    else:
        outputs = Schema([ColSpec("double", target)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def encode_image(pixels: np.ndarray, fmt: str = "PNG") -> str:
    """uint8 (H, W, 3) pixels -> base64 string, as a request carries them."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def bad_request(message: str) -> MlflowException:
    """Raised for a request the model cannot answer: the scoring server turns it into HTTP 400."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class FaceattrModel(mlflow.pyfunc.PythonModel):
    """Photos in, attribute values out; carries the Keras model and the gender model it was trained with."""

    def load_context(self, context):
        import keras

        with open(context.artifacts["spec"]) as fh:
            self.spec = json.load(fh)
        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        gender_path = context.artifacts.get("gender_model")
        self.gender_model = keras.models.load_model(gender_path, compile=False) if gender_path else None

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if frame.empty:
            raise bad_request("the request holds no photos: send at least one row with an `image`")
        if "image" not in frame:
            raise bad_request(f"each row needs an `image` (base64 JPEG/PNG); got columns {list(frame.columns)}")
        images = np.stack([self._crop(i, row) for i, row in enumerate(frame.to_dict("records"))])
        return self.predict_arrays(images, self._gender(frame))

    def predict_arrays(self, images: np.ndarray, gender: np.ndarray | None = None) -> pd.DataFrame:
        """Score ready crops (N, H, W, 3) in 0..255 with gender inputs (N, 2) (default: unknown)."""
        images = np.asarray(images, np.float32)
        if self.spec["task"] == "classification":
            p_female = self.model.predict_on_batch({"image": images})[:, 1].astype(float)
            return pd.DataFrame({"p_female": p_female, "gender": np.where(p_female >= 0.5, *GENDERS[::-1])})
        if gender is None:
            gender = np.full((len(images), 2), 0.5, np.float32)
        values = self.model.predict_on_batch({"image": images, "gender": np.asarray(gender, np.float32)})
        return pd.DataFrame({self.spec["target"]: to_unit_range(values)})

    def _crop(self, i: int, row: dict) -> np.ndarray:
        kind = row.get("kind") or "crop"
        if kind not in KINDS:
            raise bad_request(f"row {i}: kind={kind!r}; use one of {', '.join(KINDS)}")
        region = self.spec["region"]
        if kind == "photo" and region != "photo":
            raise bad_request(f"row {i}: this model reads the {region} region; send kind='crop' with a "
                              f"ready {region} crop (whole-photo cropping needs face detection)")
        try:
            raw = base64.b64decode(str(row["image"]), validate=True)
            return crop_region(load_rgb(raw), region)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(f"row {i}: `image` is not base64: {exc}") from exc
        except DataError as exc:
            raise bad_request(f"row {i}: `image` is not a JPEG/PNG photo: {exc}") from exc

    def _gender(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.full((len(frame), 2), 0.5, np.float32)
        for i, row in enumerate(frame.to_dict("records")):
            label, p = row.get("gender"), row.get("p_female")
            if isinstance(label, str) and label:
                if label.lower() not in GENDERS:
                    raise bad_request(f"row {i}: gender={label!r}; use male or female")
                out[i] = np.eye(2)[GENDERS.index(label.lower())]
            elif p is not None and not pd.isna(p):
                if not 0 <= float(p) <= 1:
                    raise bad_request(f"row {i}: p_female={p!r} is outside 0..1")
                out[i] = (1 - float(p), float(p))
        return out
