"""The served model: an `mlflow.pyfunc` model that takes photos and returns values in 0..1.

A request is a table with one row per photo:
- `image`: the photo's JPEG/PNG bytes (required; the signature's column is `binary`: Python and Spark
  callers pass bytes, JSON callers send base64, which MLflow's scoring server decodes);
- `kind`: `crop` (a ready crop of the model's region, the default) or `photo` (a whole photo);
- `gender` (`male`/`female`) or `p_female` (0..1): the gender input of a regression, optional;
  without them the bundled gender model is used where it can be, else the "unknown" [0.5, 0.5].
Regressions answer one column named after the target; the gender model answers `p_female` and `gender`;
an identity model `p_person`, `is_person` and the `person` it was trained to recognise.

The answer is row by row: a row that cannot be answered (no face, not a photo, a refused crop, a bad
gender value, a photo over MAX_IMAGE_MB) gets its reason in the `error` column and no values; the
answered rows have a null `error`. Missing values are None (JSON null, never a bare NaN).
A request wrong as a whole is answered HTTP 400 with the reason (no rows, no `image` column, more than
MAX_ROWS rows), and the server keeps serving (environment variables FACEATTR_MAX_ROWS /
FACEATTR_MAX_IMAGE_MB where the server runs). MLflow's scoring server
itself has no body-size limit; put a proxy (nginx `client_max_body_size`) in front for a hard cap.

Batch jobs in Python skip JSON and base64: `predict_arrays(crops, gender)` takes ready (N, H, W, 3)
crops, and batch.py scores files through `read_all` and `answer_reads`, the rule the server answers by.
What the model is (task, region, what it reads, its served settings) is its record (faceattr/record.py). The Keras
models are loaded and traced once per process (`loaded`), in `load_context`: Spark's `spark_udf` loads the pyfunc
once per task, and a reused Python worker runs many tasks. Requests run Keras' `predict_on_batch`, a
`tf.function` (reduce_retracing) under the TF backend.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import os
from typing import NamedTuple
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

from faceattr import record, tasks
from faceattr.data import faces
from faceattr.data.faces import FACES
from faceattr.data.loading import unknown_gender
from faceattr.data.regions import CUTS, TooLarge, load_rgb
from faceattr.errors import DataError
from faceattr.gender_input import gender_model_probabilities, gender_probabilities, row_gender, rows_gender

KINDS = ("crop", "photo")
INPUT_COLUMNS = ("image", "kind", "gender", "p_female")   # what the served model reads of a request row
ERROR = "error"   # the answer's column saying why a row has no values ("" where it has them)
MAX_ROWS = int(os.environ.get("FACEATTR_MAX_ROWS", "1024"))
MAX_IMAGE_MB = float(os.environ.get("FACEATTR_MAX_IMAGE_MB", "8"))
WINDOW_PIXELS = 64_000_000   # photos held decoded at once while a request's faces are found (~190 MB of RGB)
# Set to a folder, every load of the Keras models writes a file named after its process there: how
# tests and `faceattr predict --engine spark` count loads (one per worker process, not per task).
LOAD_LOG = "FACEATTR_LOAD_LOG"


def signature(model: record.ModelRecord) -> ModelSignature:
    """What a request holds and what the answer holds (shown in the model's page in `mlflow ui`)."""
    inputs = Schema([ColSpec("binary", "image"), ColSpec("string", "kind", required=False),
                     ColSpec("string", "gender", required=False), ColSpec("double", "p_female", required=False)])
    columns = [ColSpec(kind, name, required=False) for kind, name in tasks.of(model.settings).answer_columns(model.target)]
    columns += [ColSpec("double", name, required=False) for name in cut_columns(model)]
    columns += [ColSpec("long", FACES, required=False)]   # how many faces a whole photo showed (data/faces.py)
    columns += [ColSpec("string", ERROR)]
    return ModelSignature(inputs=inputs, outputs=Schema(columns))


def cut_columns(model: record.ModelRecord) -> list[str]:
    """The answer's extra column per cut of a region cut more than once from a whole photo (each eye:
    `eyes_left`, `eyes_right`: the eye on the image's left / right); empty for a ready crop."""
    return [f"{model.target}_{cut}" for cut in CUTS.get(model.region, ())]


def answer_names(model: record.ModelRecord) -> list[str]:
    """The answer's value columns, in order (the signature's outputs without `error`)."""
    return [name for _, name in tasks.of(model.settings).answer_columns(model.target)] + cut_columns(model) + [FACES]


def image_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """uint8 (H, W, 3) pixels -> PNG (or `fmt`) bytes, as a Python or Spark request carries them."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def encode_image(pixels: np.ndarray, fmt: str = "PNG") -> str:
    """uint8 (H, W, 3) pixels -> base64 string, as a JSON request carries them."""
    return base64.b64encode(image_bytes(pixels, fmt)).decode("ascii")


def bad_request(message: str) -> MlflowException:
    """Raised for a request the model cannot answer: the scoring server turns it into HTTP 400."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class Reading(NamedTuple):
    """What `FaceattrModel.read` makes of one photo."""
    inputs: np.ndarray             # the model's inputs, one per cut
    face: np.ndarray | None        # the bundled gender model's input, or None
    faces: int | None = None       # how many faces a whole photo showed (None: a crop, or none searched)


@functools.lru_cache(maxsize=4)   # a few models per process: the one a Spark worker answers with, at most
def loaded(artifacts: tuple) -> tuple:
    """(record, Keras model, gender model or None) from a logged model's artifacts ((name, path, mtime), ...),
    traced for batch sizes 1 and 2; each load is written to LOAD_LOG when it is set. Two loads of one model
    in a process share its Keras objects."""
    import keras

    from faceattr.models import transfer

    transfer.register_layers()   # faceattr's own layers (VGG16's preprocessing) before Keras reads a model
    paths = {name: path for name, path, _ in artifacts}
    model = FaceattrModel()
    path = paths.get("record") or paths["spec"]   # spec: models logged before the record
    with open(path) as fh:
        model.record = record.read(json.load(fh), path)
    model.model = keras.models.load_model(paths["keras_model"], compile=False)
    gender_path = paths.get("gender_model")
    model.gender_model = keras.models.load_model(gender_path, compile=False) if gender_path else None
    model.warm_up()
    if folder := os.environ.get(LOAD_LOG):
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex[:8]}"), "w").close()
    return model.record, model.model, model.gender_model


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
    """Photos in, attribute values out; carries the Keras model and the gender model it was trained with,
    and the model's record (`self.record`: what it reads, its region, its served settings)."""

    def load_context(self, context):
        key = tuple(sorted((name, path, os.path.getmtime(path)) for name, path in context.artifacts.items()))
        self.record, self.model, self.gender_model = loaded(key)

    def warm_up(self) -> None:
        """Trace the compiled predict functions now (batch sizes 1 and 2, so later sizes reuse a
        shape-relaxed trace), not on the first request."""
        for n in (1, 2):
            self.predict_arrays(np.zeros((n, *self.record.kind.shape(self.record.region)), np.float32))
            if self.gender_model is not None:
                shape = self.record.gender_kind.shape("face")
                gender_model_probabilities(self.gender_model, np.zeros((n, *shape), np.float32))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if frame.empty:
            raise bad_request("the request holds no photos: send at least one row with an `image`")
        if "image" not in frame:
            raise bad_request(f"each row needs an `image` (JPEG/PNG bytes; base64 in JSON); got columns "
                              f"{list(frame.columns)}")
        if len(frame) > MAX_ROWS:
            raise bad_request(f"{len(frame)} photos in one request; send at most {MAX_ROWS} per request")
        raws, kinds = [], []
        for row in frame.to_dict("records"):
            kinds.append(row.get("kind"))
            try:
                row_gender(row)     # a bad gender value is this row's problem, found before any compute
                raws.append(photo_bytes(row["image"]))
            except DataError as exc:
                raws.append(exc)
        return self.answer_reads(frame, self.read_all(raws, kinds))

    def answer_batch(self, raws: list, rows: list[dict], profile: dict | None = None) -> pd.DataFrame:
        """`faceattr predict`'s chunk (serving/batch.py): photo bytes or the DataError reading them, per row
        of (path, kind, gender, p_female, ...)."""
        reads = self.read_all(raws, [row.get("kind") for row in rows], profile)
        frame = pd.DataFrame(rows, columns=[c for c in rows[0] if c in INPUT_COLUMNS])
        return self.answer_reads(frame, reads, profile)

    def answer_reads(self, frame: pd.DataFrame, reads: list, profile: dict | None = None) -> pd.DataFrame:
        """The answer row by row, the one rule of the server and of `faceattr predict`: `reads[i]` is what
        `read` gave for row i of `frame`, or the DataError it raised; such a row gets no values (None)
        and the reason in `error` (None, JSON null, for the rows answered: one "no error" for every engine).
        Missing values are None, not NaN, so the JSON answer holds null. `profile` (a dict) gathers the seconds of the gender input and the predict."""
        good = [i for i, found in enumerate(reads) if not isinstance(found, DataError)]
        answer = pd.DataFrame(index=range(len(reads)), columns=answer_names(self.record), dtype=object)
        if good:
            with timed(profile, "gender input"):
                gender = self.gender(frame.iloc[good], [reads[i][1] for i in good])
            with timed(profile, "predict"):
                found = self.answer_photos([reads[i][0] for i in good], gender, [reads[i].faces for i in good])
            answer = found.set_axis(good).reindex(range(len(reads)))[answer.columns]
        for column in answer:          # a column with a gap holds None there (JSON null), else stays numeric
            if answer[column].isna().any():
                answer[column] = answer[column].astype(object).where(answer[column].notna(), None)
        answer[ERROR] = pd.Series([str(found) if isinstance(found, DataError) else None for found in reads],
                                  index=answer.index, dtype=object)   # object: pandas would turn None into NaN
        return answer

    def answer_photos(self, inputs: list[np.ndarray], gender: np.ndarray | None = None,
                      faces_found: list | None = None) -> pd.DataFrame:
        """The answer per photo from each photo's model inputs as `read` gives them (one per cut).

        A photo cut more than once (each eye) is scored per cut; its answer is the geometric mean of its
        cuts' scores and each cut's own score is in its column (cut_columns; NaN for a ready crop, which is
        one cut). A person's eyes are open when both are: with the plain mean, a closed face with one eye
        misread as open read 0.5, on neither side. Measured on held-out whole faces (issue 29; eyes-whole by
        5-fold, n=550 closed / 556 open; LFW's 311 test portraits, 3 seeds), closed called closed / open
        called open / LFW open: mean 92.0% / 99.3% / 99.0%, geometric mean 95.3% / 98.9% / 98.1%, least
        eye 96.4% / 98.4% / 96.7%. `faces_found` (each Reading's `faces`): the `faces` column, how many
        faces a whole photo showed (empty for a crop: none was searched)."""
        counts = np.array([len(x) for x in inputs])
        if gender is not None:
            gender = np.repeat(np.asarray(gender, np.float32), counts, axis=0)
        per_cut = self.scores(np.concatenate(inputs), gender)
        first = np.cumsum(counts) - counts
        per_photo = np.exp(np.add.reduceat(np.log(np.clip(per_cut, 1e-7, 1)), first) / counts)   # geometric mean
        answer = tasks.of(self.record.settings).answer(per_photo, self.record.settings)
        columns = cut_columns(self.record)
        cut = counts == len(columns)    # ready crops have no sides
        for j, column in enumerate(columns):
            answer[column] = np.nan
            answer.loc[cut, column] = per_cut[first[cut] + j]
        answer[FACES] = pd.array(faces_found or [None] * len(inputs), dtype="Int64")
        return answer

    def predict_arrays(self, inputs: np.ndarray, gender: np.ndarray | None = None) -> pd.DataFrame:
        """The answer for ready model inputs (crops (N, H, W, 3) in 0..255, or descriptors (N, 128)) with
        gender inputs (N, 2) (default: unknown)."""
        return tasks.of(self.record.settings).answer(self.scores(inputs, gender), self.record.settings)

    def scores(self, inputs: np.ndarray, gender: np.ndarray | None = None) -> np.ndarray:
        """One number per photo: the task's score (what the answer reports and the evaluation judges)."""
        inputs = np.asarray(inputs, np.float32)
        kind = self.record.kind
        expected = kind.shape(self.record.region)
        if inputs.shape[1:] != expected or len(inputs) == 0:
            raise bad_request(f"expected {kind.what} of shape (N, {', '.join(map(str, expected))}) with N >= 1, "
                              f"got {inputs.shape}")
        task = tasks.of(self.record.settings)
        named = {kind.name: inputs}
        if task.reads_gender:
            named["gender"] = unknown_gender(len(inputs)) if gender is None else \
                np.asarray(gender, np.float32)
        return task.scores(self.model.predict_on_batch(named))

    def read(self, raw, kind: str | None = None, profile: dict | None = None) -> "Reading":
        """Photo bytes (or a path) -> a Reading: the model's inputs, one per cut, as its input kind computes
        them (faceattr/models/inputs.py): (cuts, H, W, 3) crops of its region resized as in training, or
        (1, 128) the photo's face descriptor; the bundled gender model's input from the photo's face, or
        None; and how many faces a whole photo showed (data/faces.py's subject-face rule answers for one).
        Whole photos go through the same face detection and crop code as `faceattr prepare` and training.
        DataError if the photo is unusable (unreadable, no face, ...) or if the model must not read whole
        photos (regions.photo_refusal: its training crops do not look like this cut). `profile` (a dict)
        gathers the seconds spent per stage: decode, detect, cut, gender input."""
        found = self.read_all([raw], [kind], profile)[0]
        if isinstance(found, DataError):
            raise found
        return found

    def read_all(self, raws: list, kinds: list, profile: dict | None = None) -> list:
        """`read` for many photos at once, a Reading or the DataError saying why not in each photo's place
        (a DataError among `raws` is a row refused already, kept in its place). The whole photos' faces are
        found together: MTCNN batches photos of one size, ~5x cheaper per photo than one at a time. Photos
        are decoded into windows of at most WINDOW_PIXELS, so a request of big photos is not all held
        decoded at once."""
        readings: list = [None] * len(raws)
        window, pixels = [], 0
        for i, (raw, kind) in enumerate(zip(raws, kinds)):
            try:
                if isinstance(raw, DataError):
                    raise raw
                kind = self._kind(kind)
                with timed(profile, "decode"):
                    image = self._decode(raw)
            except DataError as exc:
                readings[i] = exc
                continue
            window.append((i, kind, image))
            pixels += image.width * image.height
            if pixels >= WINDOW_PIXELS:
                self._read_window(window, readings, profile)
                window, pixels = [], 0
        self._read_window(window, readings, profile)
        return readings

    def _read_window(self, window: list, readings: list, profile: dict | None) -> None:
        """readings[i] for each decoded (i, kind, image) of `window`, its whole photos' faces found in one go."""
        searched = self.record.kind.needs_face(self.record.region) or self.gender_model is not None
        whole = [(i, image) for i, kind, image in window if kind == "photo"] if searched else []
        with timed(profile, "detect"):
            found = dict(zip([i for i, _ in whole], faces.find_subjects([image for _, image in whole])))
        for i, kind, image in window:
            try:
                readings[i] = self._read_decoded(kind, image, found.get(i, {}), profile)
            except DataError as exc:
                readings[i] = exc

    def _kind(self, kind) -> str:
        kind = kind if isinstance(kind, str) and kind else "crop"
        if kind not in KINDS:
            raise DataError(f"kind={kind!r}; use one of {', '.join(KINDS)}")
        if kind == "photo" and (refusal := self.record.photo_refusal()):
            raise DataError(f"kind=photo refused: {refusal}")
        return kind

    @staticmethod
    def _decode(raw):
        try:
            return load_rgb(raw)
        except TooLarge as exc:
            raise DataError(f"`image` is {str(exc).removeprefix('<bytes>: ')}") from exc
        except DataError as exc:
            raise DataError(f"`image` is not a JPEG/PNG photo: {str(exc).removeprefix('<bytes>: ')}") from exc

    def _read_decoded(self, kind: str, image, boxes, profile: dict | None) -> "Reading":
        """One decoded photo's Reading; `boxes`: find_subjects' answer for a whole photo ({} when none was
        searched)."""
        region, reads = self.record.region, self.record.kind
        if kind == "crop":
            with timed(profile, "cut"):
                return Reading(reads.of_crop(image, region), None)
        if isinstance(boxes, DataError):
            if reads.needs_face(region):
                raise boxes                             # NoFace / SeveralFaces are the sender's problem
            boxes = {}                                  # the background needs no face; gender falls back
        with timed(profile, "cut"):
            inputs = reads.of_photo(image, region, boxes)
        with timed(profile, "gender input"):
            return Reading(inputs, self._gender_input(image, boxes.get("face_box")),
                           int(boxes[FACES]) if FACES in boxes else None)

    def _gender_input(self, image, face_box: str | None) -> np.ndarray | None:
        """What the bundled gender model reads of this photo's face (its input kind: a crop or a descriptor)."""
        if face_box is None or self.gender_model is None:
            return None
        return self.record.gender_kind.of_face(image, face_box)

    def gender(self, frame: pd.DataFrame, face_inputs: list | None = None) -> np.ndarray:
        """Each row's gender input (faceattr/gender_input.py), the bundled gender model reading faces."""
        return gender_probabilities(frame, face_inputs or [None] * len(frame), self.gender_model)

    def gender_of_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """This gender model's [p_male, p_female] for a data set's rows (whole photos with face boxes,
        or face crops): the regressions' training input when it is the champion."""
        return rows_gender(self.model, frame)


def photo_bytes(value) -> bytes:
    """A request's `image`: bytes as they come (a binary column: Python, Spark, MLflow's scoring server
    decoding JSON's base64), or a base64 string (a caller of `predict` handing JSON's column as is).
    DataError for anything else, or a photo over MAX_IMAGE_MB."""
    if isinstance(value, str) and value:
        if len(value) > MAX_IMAGE_MB * 2**20 * 4 / 3:
            raise DataError(f"`image` is {len(value) / 2**20:.1f} MB of base64; the limit is {MAX_IMAGE_MB:g} MB "
                            f"per photo (FACEATTR_MAX_IMAGE_MB)")
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataError(f"`image` is not base64: {exc}") from exc
    if not isinstance(value, (bytes, bytearray)) or not value:
        raise DataError(f"`image` must be a photo's non-empty bytes (base64 in JSON), got {type(value).__name__}")
    if len(value) > MAX_IMAGE_MB * 2**20:
        raise DataError(f"`image` is {len(value) / 2**20:.1f} MB; the limit is {MAX_IMAGE_MB:g} MB per photo "
                        f"(FACEATTR_MAX_IMAGE_MB)")
    return bytes(value)
