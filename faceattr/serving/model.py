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
crops (see faceattr/serving/batch.py). The Keras models are loaded and traced once, in `load_context`;
requests run Keras' `predict_on_batch`, a `tf.function` (reduce_retracing) under the TF backend.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import time
import uuid
from contextlib import contextmanager

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from faceattr import models, tasks
from faceattr.data import faces
from faceattr.data.regions import CUTS, REGION_SIZES, crop_region, load_rgb, parse_box, photo_refusal
from faceattr.errors import DataError
from faceattr.features.face_descriptor import DIMENSIONS, describe
from faceattr.gender_input import gender_model_probabilities, gender_probabilities, rows_gender

KINDS = ("crop", "photo")
ERROR = "error"   # the answer's column saying why a row has no values ("" when it has them)
# Set to a folder, every load of the Keras models writes a file named after its process there: how
# tests and `faceattr predict --engine spark` count loads (one per worker process, not per partition).
LOAD_LOG = "FACEATTR_LOAD_LOG"
MAX_ROWS = int(os.environ.get("FACEATTR_MAX_ROWS", "1024"))
MAX_IMAGE_MB = float(os.environ.get("FACEATTR_MAX_IMAGE_MB", "8"))


def signature(spec: dict) -> ModelSignature:
    """What a request holds and what the answer holds (shown in the model's page in `mlflow ui`)."""
    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "kind", required=False),
                     ColSpec("string", "gender", required=False), ColSpec("double", "p_female", required=False)])
    columns = [ColSpec(kind, name) for kind, name in tasks.of(spec).answer_columns(spec["target"])]
    columns += [ColSpec("double", name, required=False) for name in cut_columns(spec)]
    columns += [ColSpec("string", ERROR, required=False)]
    return ModelSignature(inputs=inputs, outputs=Schema(columns))


def answer_names(spec: dict) -> list[str]:
    """The answer's value columns, in order (the signature's outputs without `error`)."""
    return [name for _, name in tasks.of(spec).answer_columns(spec["target"])] + cut_columns(spec)


def cut_columns(spec: dict) -> list[str]:
    """The answer's extra column per cut of a region cut more than once from a whole photo (each eye:
    `eyes_left`, `eyes_right`: the eye on the image's left / right); empty for a ready crop."""
    return [f"{spec['target']}_{cut}" for cut in CUTS.get(spec.get("region"), ())]


def encode_image(pixels: np.ndarray, fmt: str = "PNG") -> str:
    """uint8 (H, W, 3) pixels -> base64 string, as a request carries them."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def bad_request(message: str) -> MlflowException:
    """Raised for a request the model cannot answer: the scoring server turns it into HTTP 400."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


_LOADED: dict[tuple, tuple] = {}   # artifacts -> (spec, Keras model, gender model): this process's loads


@contextmanager
def timed(profile: dict | None, stage: str):
    """Add the seconds the block takes to profile[stage] (nothing when profile is None)."""
    if profile is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        profile[stage] = profile.get(stage, 0.0) + time.perf_counter() - start


class FaceattrModel(mlflow.pyfunc.PythonModel):
    """Photos in, attribute values out; carries the Keras model and the gender model it was trained with.

    `spec["input"]` says what the Keras model reads: `image` (the region's crop; models logged before
    the key existed) or `descriptor` (dlib's face descriptor of the photo, faceattr/features).
    """

    def load_context(self, context):
        """Load and warm up the Keras models once per process: Spark's `spark_udf` (env_manager local)
        loads the pyfunc once per task, and a reused Python worker runs many tasks."""
        key = tuple(sorted(context.artifacts.items()))
        if key not in _LOADED:
            _LOADED[key] = self._load(context.artifacts)
        self.spec, self.model, self.gender_model = _LOADED[key]

    def _load(self, artifacts: dict) -> tuple:
        import keras

        with open(artifacts["spec"]) as fh:
            self.spec = json.load(fh)
        self.model = keras.models.load_model(artifacts["keras_model"], compile=False)
        gender_path = artifacts.get("gender_model")
        self.gender_model = keras.models.load_model(gender_path, compile=False) if gender_path else None
        self.warm_up()
        if folder := os.environ.get(LOAD_LOG):
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex[:8]}"), "w").close()
        return self.spec, self.model, self.gender_model

    @property
    def reads(self) -> str:
        return self.spec.get("input", "image")

    def input_shape(self) -> tuple[int, ...]:
        return (DIMENSIONS,) if self.reads == "descriptor" else (*REGION_SIZES[self.spec["region"]], 3)

    def warm_up(self) -> None:
        """Trace the compiled predict functions now (batch sizes 1 and 2, so later sizes reuse a
        shape-relaxed trace), not on the first request."""
        for n in (1, 2):
            self.predict_arrays(np.zeros((n, *self.input_shape()), np.float32))
            if self.gender_model is not None:
                shape = (DIMENSIONS,) if models.input_name(self.gender_model) == "descriptor" \
                    else (*REGION_SIZES["face"], 3)
                gender_model_probabilities(self.gender_model, np.zeros((n, *shape), np.float32))

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if frame.empty:
            raise bad_request("the request holds no photos: send at least one row with an `image`")
        if "image" not in frame:
            raise bad_request(f"each row needs an `image` (base64 JPEG/PNG); got columns {list(frame.columns)}")
        if len(frame) > MAX_ROWS:
            raise bad_request(f"{len(frame)} photos in one request; send at most {MAX_ROWS} per request")
        reads = []
        for i, row in enumerate(frame.to_dict("records")):
            try:
                reads.append(self._read(i, row))
            except DataError as exc:
                reads.append(exc)
        try:
            return self.answer_reads(frame, reads)
        except DataError as exc:   # a gender input the request gets wrong as a whole
            raise bad_request(str(exc)) from exc

    def answer_reads(self, frame: pd.DataFrame, reads: list, profile: dict | None = None) -> pd.DataFrame:
        """The answer row by row: `reads[i]` is what `read` gave for row i of `frame`, or the DataError it
        raised; such a row gets empty values and the reason in `error` ("" for the rows answered)."""
        good = [i for i, r in enumerate(reads) if isinstance(r, tuple)]
        answer = pd.DataFrame(index=range(len(reads)), columns=answer_names(self.spec), dtype=object)
        if good:
            with timed(profile, "gender input"):
                gender = self.gender(frame.iloc[good], [reads[i][1] for i in good])
            with timed(profile, "predict"):
                found = self.answer_photos([reads[i][0] for i in good], gender)
            answer = found.set_axis(good).reindex(range(len(reads)))[answer.columns]
        answer[ERROR] = ["" if isinstance(r, tuple) else str(r) for r in reads]
        return answer

    def answer_photos(self, inputs: list[np.ndarray], gender: np.ndarray | None = None) -> pd.DataFrame:
        """The answer per photo from each photo's model inputs as `read` gives them (one per cut).

        A photo cut more than once (each eye) is scored per cut; its answer is the mean of its cuts'
        scores (an eye-openness for the person: a wink reads 0.5) and each cut's own score is in its
        column (cut_columns; empty for a ready crop, which is one cut)."""
        counts = np.array([len(x) for x in inputs])
        if gender is not None:
            gender = np.repeat(np.asarray(gender, np.float32), counts, axis=0)
        per_cut = self.scores(np.concatenate(inputs), gender)
        owner = np.repeat(np.arange(len(inputs)), counts)
        answer = tasks.of(self.spec).answer(np.bincount(owner, per_cut) / counts, self.spec)
        columns = cut_columns(self.spec)
        cut, first = counts == len(columns), np.cumsum(counts) - counts    # ready crops have no sides
        for j, column in enumerate(columns):
            answer[column] = np.nan
            answer.loc[cut, column] = per_cut[first[cut] + j]
        return answer

    def predict_arrays(self, inputs: np.ndarray, gender: np.ndarray | None = None) -> pd.DataFrame:
        """The answer for ready model inputs (crops (N, H, W, 3) in 0..255, or descriptors (N, 128)) with
        gender inputs (N, 2) (default: unknown)."""
        return tasks.of(self.spec).answer(self.scores(inputs, gender), self.spec)

    def scores(self, inputs: np.ndarray, gender: np.ndarray | None = None) -> np.ndarray:
        """One number per photo: the task's score (what the answer reports and the evaluation judges)."""
        inputs = np.asarray(inputs, np.float32)
        expected = self.input_shape()
        if inputs.shape[1:] != expected or len(inputs) == 0:
            what = "descriptors" if self.reads == "descriptor" else "crops"
            raise bad_request(f"expected {what} of shape (N, {', '.join(map(str, expected))}) with N >= 1, "
                              f"got {inputs.shape}")
        task = tasks.of(self.spec)
        named = {self.reads: inputs}
        if task.reads_gender:
            named["gender"] = np.full((len(inputs), 2), 0.5, np.float32) if gender is None else \
                np.asarray(gender, np.float32)
        return task.scores(self.model.predict_on_batch(named))

    def _read(self, i: int, row: dict) -> tuple[np.ndarray, np.ndarray | None]:
        text = row["image"]
        if isinstance(text, (bytes, bytearray)):   # a binary column (Spark's binaryFile, Python callers)
            return self.read(bytes(text), row.get("kind"))
        if not isinstance(text, str) or not text:
            raise DataError(f"`image` must be a non-empty base64 string, got {type(text).__name__}")
        if len(text) > MAX_IMAGE_MB * 2**20:
            raise DataError(f"oversized: `image` is {len(text) / 2**20:.1f} MB of base64; the limit is "
                            f"{MAX_IMAGE_MB:g} MB per photo (FACEATTR_MAX_IMAGE_MB)")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataError(f"`image` is not base64: {exc}") from exc
        return self.read(raw, row.get("kind"))

    def read(self, raw: bytes, kind: str | None = None, profile: dict | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """Photo bytes -> (the model's inputs, one per cut: (cuts, H, W, 3) crops of its region,
        resized as in training, or (1, 128) the photo's face descriptor; the bundled gender model's input
        from the photo's face, or None). Whole photos go through the same face detection and crop code as
        `faceattr prepare` and training: one crop per box of `regions.box_columns(region)` (each eye).
        DataError if the photo is unusable (oversized, unreadable, no face, ...) or if the model must not read
        whole photos (regions.photo_refusal: its training crops do not look like this cut). `profile`
        (a dict) gathers the seconds spent per stage: decode, detect, cut, gender input."""
        kind = kind if isinstance(kind, str) and kind else "crop"
        if kind not in KINDS:
            raise DataError(f"kind={kind!r}; use one of {', '.join(KINDS)}")
        if kind == "photo" and (refusal := photo_refusal(self.spec.get("crops"))):
            raise DataError(f"kind=photo refused: {refusal}")
        if len(raw) > MAX_IMAGE_MB * 2**20:
            raise DataError(f"oversized: the photo is {len(raw) / 2**20:.1f} MB; the limit is {MAX_IMAGE_MB:g} MB "
                            f"per photo (FACEATTR_MAX_IMAGE_MB)")
        region = self.spec["region"]
        with timed(profile, "decode"):
            try:
                image = load_rgb(raw)
            except DataError as exc:
                raise DataError(f"`image` is not a JPEG/PNG photo: {exc}") from exc
        if self.reads == "descriptor":   # a crop is searched whole; a photo's face is found as prepare finds it
            with timed(profile, "detect"):
                box = parse_box(faces.find_regions(image)["face_box"]) if kind == "photo" else None
            with timed(profile, "cut"):
                return describe(np.asarray(image), box)[None], None
        if kind == "crop":
            with timed(profile, "cut"):
                return crop_region(image, region)[None], None
        boxes = {}
        with timed(profile, "detect"):
            if region != "photo":
                boxes = faces.find_regions(image)           # NoFace / SeveralFaces are the sender's problem
            elif self.gender_model is not None:
                try:                                        # the background needs no face; gender falls back
                    boxes = faces.find_regions(image)
                except DataError:
                    boxes = {}
        with timed(profile, "cut"):
            crops = faces.cut(image, region, boxes)
        with timed(profile, "gender input"):
            return crops, self._gender_input(image, boxes.get("face_box"))

    def _gender_input(self, image, face_box: str | None) -> np.ndarray | None:
        """What the bundled gender model reads of this photo's face: its face crop or its descriptor."""
        if face_box is None or self.gender_model is None:
            return None
        if models.input_name(self.gender_model) == "descriptor":
            try:
                return describe(np.asarray(image), parse_box(face_box))
            except DataError:     # dlib sees no face where MTCNN did: the gender input falls back to unknown
                return None
        return crop_region(image, "face", parse_box(face_box))

    def gender(self, frame: pd.DataFrame, face_inputs: list | None = None) -> np.ndarray:
        """Each row's gender input (faceattr/gender_input.py), the bundled gender model reading faces."""
        return gender_probabilities(frame, face_inputs or [None] * len(frame), self.gender_model)

    def gender_of_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """This gender model's [p_male, p_female] for a data set's rows (whole photos with face boxes,
        or face crops): the regressions' training input when it is the champion."""
        return rows_gender(self.model, frame)

