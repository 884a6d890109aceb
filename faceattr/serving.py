"""The served model: an `mlflow.pyfunc` model that takes photos and returns values in 0..1.

A request is a table with one row per photo:
- `image`: the photo as a base64 JPEG/PNG string (required);
- `kind`: `crop` (a ready crop of the model's region, the default) or `photo` (a whole photo);
- `gender` (`male`/`female`) or `p_female` (0..1): the gender input of a regression, optional;
  without them the bundled gender model is used where it can be, else the "unknown" [0.5, 0.5].
Regressions answer one column named after the target; the gender model answers `p_female` and `gender`;
an identity model `p_person`, `is_person` and the `person` it was trained to recognise.

Limits (a request over them is answered HTTP 400 with the reason, and the server keeps serving):
at most MAX_ROWS photos per request and MAX_IMAGE_MB megabytes of base64 per photo (environment
variables FACEATTR_MAX_ROWS / FACEATTR_MAX_IMAGE_MB where the server runs). MLflow's scoring server
itself has no body-size limit; put a proxy (nginx `client_max_body_size`) in front for a hard cap.

Batch jobs in Python skip JSON and base64: `predict_arrays(crops, gender)` takes ready (N, H, W, 3)
crops (see faceattr/predict.py). The Keras models are loaded and traced once, in `load_context`;
requests run Keras' `predict_on_batch`, a `tf.function` (reduce_retracing) under the TF backend.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from faceattr.data.manifest import GENDERS
from faceattr.data import faces
from faceattr.data.regions import crop_region, load_rgb, parse_box
from faceattr.errors import DataError
from faceattr.models.cnn import to_unit_range

KINDS = ("crop", "photo")
MAX_ROWS = int(os.environ.get("FACEATTR_MAX_ROWS", "1024"))
MAX_IMAGE_MB = float(os.environ.get("FACEATTR_MAX_IMAGE_MB", "8"))


def signature(task: str, target: str) -> ModelSignature:
    """What a request holds and what the answer holds (shown in the model's page in `mlflow ui`)."""
    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "kind", required=False),
                     ColSpec("string", "gender", required=False), ColSpec("double", "p_female", required=False)])
    if task == "classification":
        outputs = Schema([ColSpec("double", "p_female"), ColSpec("string", "gender")])
    elif task == "identity":  # P(the photo shows the trained person), that decision at 0.5, and who
        outputs = Schema([ColSpec("double", "p_person"), ColSpec("boolean", "is_person"), ColSpec("string", "person")])
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
        self.warm_up()

    def warm_up(self) -> None:
        """Trace the compiled predict functions now (batch sizes 1 and 2, so later sizes reuse a
        shape-relaxed trace), not on the first request."""
        from faceattr.data.regions import REGION_SIZES

        height, width = REGION_SIZES[self.spec["region"]]
        for n in (1, 2):
            self.predict_arrays(np.zeros((n, height, width, 3), np.float32))
            if self.gender_model is not None:
                self.gender_model.predict_on_batch({"image": np.zeros((n, 60, 60, 3), np.float32)})

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if frame.empty:
            raise bad_request("the request holds no photos: send at least one row with an `image`")
        if "image" not in frame:
            raise bad_request(f"each row needs an `image` (base64 JPEG/PNG); got columns {list(frame.columns)}")
        if len(frame) > MAX_ROWS:
            raise bad_request(f"{len(frame)} photos in one request; send at most {MAX_ROWS} per request")
        crops = [self._crop(i, row) for i, row in enumerate(frame.to_dict("records"))]
        images = np.stack([image for image, _ in crops])
        return self.predict_arrays(images, self._gender(frame, [face for _, face in crops]))

    def predict_arrays(self, images: np.ndarray, gender: np.ndarray | None = None) -> pd.DataFrame:
        """Score ready crops (N, H, W, 3) in 0..255 with gender inputs (N, 2) (default: unknown)."""
        from faceattr.data.regions import REGION_SIZES

        images = np.asarray(images, np.float32)
        expected = (*REGION_SIZES[self.spec["region"]], 3)
        if images.ndim != 4 or images.shape[1:] != expected or len(images) == 0:
            raise bad_request(f"expected crops of shape (N, {', '.join(map(str, expected))}) with N >= 1, "
                              f"got {images.shape}")
        if self.spec["task"] == "identity":
            p_person = self.model.predict_on_batch({"image": images}).reshape(-1).astype(float)
            return pd.DataFrame({"p_person": p_person, "is_person": p_person >= 0.5,
                                 "person": self.spec.get("person", "")})
        if self.spec["task"] == "classification":
            p_female = self.model.predict_on_batch({"image": images})[:, 1].astype(float)
            return pd.DataFrame({"p_female": p_female, "gender": np.where(p_female >= 0.5, *GENDERS[::-1])})
        if gender is None:
            gender = np.full((len(images), 2), 0.5, np.float32)
        values = self.model.predict_on_batch({"image": images, "gender": np.asarray(gender, np.float32)})
        return pd.DataFrame({self.spec["target"]: to_unit_range(values)})

    def _crop(self, i: int, row: dict) -> np.ndarray:
        text = row["image"]
        if not isinstance(text, str) or not text:
            raise bad_request(f"row {i}: `image` must be a non-empty base64 string, got {type(text).__name__}")
        if len(text) > MAX_IMAGE_MB * 2**20:
            raise bad_request(f"row {i}: `image` is {len(text) / 2**20:.1f} MB of base64; the limit is "
                              f"{MAX_IMAGE_MB:g} MB per photo (FACEATTR_MAX_IMAGE_MB)")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(f"row {i}: `image` is not base64: {exc}") from exc
        try:
            return self.crop(raw, row.get("kind"))
        except DataError as exc:
            raise bad_request(f"row {i}: {exc}") from exc

    def crop(self, raw, kind: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Photo bytes (or a path) -> (the model's input crop, resized as in training; the face crop for
        the bundled gender model, or None). Whole photos go through the same face detection and crop
        code as `faceattr prepare`. DataError if the photo is unusable (unreadable, no face, ...)."""
        kind = kind if isinstance(kind, str) and kind else "crop"
        if kind not in KINDS:
            raise DataError(f"kind={kind!r}; use one of {', '.join(KINDS)}")
        region = self.spec["region"]
        try:
            image = load_rgb(raw)
        except DataError as exc:
            raise DataError(f"`image` is not a JPEG/PNG photo: {exc}") from exc
        if kind == "crop":
            return crop_region(image, region), None
        boxes = {}
        if region != "photo":
            boxes = faces.find_regions(image)           # NoFace / SeveralFaces are the sender's problem
        elif self.gender_model is not None:
            try:                                        # the background needs no face; gender falls back
                boxes = faces.find_regions(image)
            except DataError:
                boxes = {}
        main = crop_region(image, region, parse_box(boxes[f"{region}_box"]) if region != "photo" else None)
        face = crop_region(image, "face", parse_box(boxes["face_box"])) if "face_box" in boxes else None
        return main, face

    def _gender(self, frame: pd.DataFrame, face_crops: list | None = None) -> np.ndarray:
        """Each row's gender input: its `gender` or `p_female`, else the bundled gender model on the
        photo's face (whole photos), else the "unknown" [0.5, 0.5]."""
        out = np.full((len(frame), 2), 0.5, np.float32)
        face_crops = face_crops or [None] * len(frame)
        ask = []
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
            elif face_crops[i] is not None and self.gender_model is not None:
                ask.append(i)
        if ask:
            faces_in = np.stack([face_crops[i] for i in ask]).astype(np.float32)
            out[ask] = self.gender_model.predict_on_batch({"image": faces_in})
        return out
