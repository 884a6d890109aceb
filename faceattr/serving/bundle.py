"""A bundle: one served model answering every attribute of every face of a photo (issue 28).

A bundle version pins its members, registered models each at one version (their champions when the
bundle was made: faceattr/bundling.py), and carries their Keras models and records as its own artifacts,
so a bundle version never changes what it answers. A request is a table of whole photos (`image`, as for
a single model; `kind`, if given, must be `photo`). Each photo is decoded once and its faces found once,
by the same MTCNN, subject rule and crop code as every model (data/faces.py); each input kind is computed
once per face and region (one dlib descriptor per face, shared by every member reading descriptors and by
the gender input of regressions whose bundled gender model reads them); then each member predicts once
for the whole request.

The answer is one row per photo: the subject face's answers in flat columns named as each member answers
(`eyes`, `eyes_left`, `p_female`, `smiling`, `age`, ...), `faces` (how many confident faces), `error`
(None when every member answered the subject; else why: no face, several faces of similar size, an
unreadable photo, or `member: reason` for a member that refused the face), and `faces_found`: every face,
largest first, each a mapping with `box` [x, y, w, h] in pixels, `confidence`, `subject` and every
member's answers for it (None where that member refused it). The request param `faces` is `all` (the
default) or `subject`: `subject` describes the subject alone (`faces_found` holds it only).
"""

from __future__ import annotations

import json
import os

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from faceattr import record
from faceattr.data import faces
from faceattr.data.faces import FACES
from faceattr.errors import DataError
from faceattr.serving.model import (ERROR, MAX_ROWS, FaceattrModel, answer_names, bad_request, loaded,
                                    photo_bytes, timed)

FACES_FOUND = "faces_found"
FACE_MODES = ("all", "subject")
FOUND_SHAPES = ("list", "json")   # faces_found as a list of mappings (JSON answers) or as JSON text (tables)
BUNDLE_RECORD = "bundle.json"   # the members: [{name, version, source}], in answer order


def member_columns(made: record.ModelRecord) -> list[str]:
    """What a member adds to a bundle's row: its answer's value columns (each eye's too), not `faces`."""
    return [c for c in answer_names(made) if c != FACES]


def signature(members: list[record.ModelRecord]) -> ModelSignature:
    """Whole photos in (the param `faces`: all | subject); the members' columns, faces, error, faces_found out."""
    from faceattr import tasks

    columns = []
    for made in members:
        kinds = dict((name, kind) for kind, name in tasks.of(made.settings).answer_columns(made.target))
        columns += [ColSpec(kinds.get(c, "double"), c, required=False) for c in member_columns(made)]
    columns += [ColSpec("long", FACES, required=False), ColSpec("string", ERROR, required=False),
                ColSpec("string", FACES_FOUND, required=False)]   # JSON text in a table; a list in JSON answers
    inputs = Schema([ColSpec("binary", "image"), ColSpec("string", "kind", required=False)])
    params = ParamSchema([ParamSpec("faces", "string", "all"), ParamSpec(FACES_FOUND, "string", "list")])
    return ModelSignature(inputs=inputs, outputs=Schema(columns), params=params)


class BundleModel(mlflow.pyfunc.PythonModel):
    """Whole photos in, every member's answers for every face out (the module docstring)."""

    def load_context(self, context):
        with open(context.artifacts[BUNDLE_RECORD]) as fh:
            self.members_record = json.load(fh)["members"]
        self.members = []
        for i, _ in enumerate(self.members_record):
            mine = {name.split(".", 1)[1]: path for name, path in context.artifacts.items()
                    if name.startswith(f"m{i}.")}
            key = tuple(sorted((name, path, os.path.getmtime(path)) for name, path in mine.items()))
            member = FaceattrModel()
            member.record, member.model, member.gender_model = loaded(key)
            self.members.append(member)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        mode = (params or {}).get("faces", "all") or "all"
        if mode not in FACE_MODES:
            raise bad_request(f"param faces={mode!r}; use {' or '.join(FACE_MODES)}")
        shape = (params or {}).get(FACES_FOUND, "list") or "list"
        if shape not in FOUND_SHAPES:
            raise bad_request(f"param {FACES_FOUND}={shape!r}; use {' or '.join(FOUND_SHAPES)}")
        if frame.empty or "image" not in frame:
            raise bad_request("each row needs an `image` (a whole photo's JPEG/PNG bytes; base64 in JSON)")
        if len(frame) > MAX_ROWS:
            raise bad_request(f"{len(frame)} photos in one request; send at most {MAX_ROWS} per request")
        answer = self.answer([row for row in frame.to_dict("records")], subject_only=mode == "subject")
        return as_json_text(answer) if shape == "json" else answer

    def answer_batch(self, raws: list, rows: list[dict], profile: dict | None = None) -> pd.DataFrame:
        """`faceattr predict`'s chunk (serving/batch.py): photo bytes or the DataError reading them, per row;
        `faces_found` as JSON text, one cell per photo in a CSV or Parquet table."""
        return as_json_text(self.answer([{**row, "image": raw} for raw, row in zip(raws, rows)], profile=profile))

    def answer(self, rows: list[dict], subject_only: bool = False, profile: dict | None = None) -> pd.DataFrame:
        """The bundle's answer for request rows (dicts with `image`, optionally `kind`)."""
        images, errors = [], [None] * len(rows)
        for i, row in enumerate(rows):
            try:
                if isinstance(row["image"], DataError):
                    raise row["image"]
                if (row.get("kind") or "photo") != "photo":
                    raise DataError(f"kind={row.get('kind')!r}: a bundle reads whole photos (kind=photo)")
                with timed(profile, "decode"):
                    images.append((i, FaceattrModel._decode(photo_bytes(row["image"]))))
            except DataError as exc:
                errors[i] = str(exc)
        with timed(profile, "detect"):
            detections = faces.detect_each([image for _, image in images])
        described: list[tuple[int, dict, bool]] = []   # (row, face, is the subject) for each face described
        counts: dict[int, int] = {}
        for (i, image), detection in zip(images, detections):
            try:
                if "error" in detection:
                    raise DataError(f"the face {detection['error']}")
                found = faces.confident(detection)   # the faces the subject rule weighs, largest first
                counts[i] = len(found)
                subject = faces.choose_face(detection)
            except DataError as exc:
                errors[i], subject = str(exc), None
                if subject_only or not counts.get(i):
                    continue
            for face in found:
                if subject_only and face["box"] != subject["box"]:
                    continue
                described.append((i, face, subject is not None and face["box"] == subject["box"]))
        decoded = dict(images)
        answers = self._describe([(decoded[i], face) for i, face, _ in described], profile)
        return self._rows(len(rows), described, answers, counts, errors)

    def _describe(self, found: list, profile: dict | None) -> list[dict]:
        """Every member's answers ({column: value}, or {ERROR: reason}) for each (image, face) of `found`."""
        cache: list[dict] = [{} for _ in found]     # per face: (kind name, region) -> its inputs, or the DataError
        boxes = [faces.region_boxes(face) for _, face in found]

        def computed(j: int, kind, region: str):
            key = kind.cache_key(region)
            if key not in cache[j]:
                try:
                    cache[j][key] = kind.of_photo(found[j][0], region, boxes[j], lambda *part: part_of(j, *part))
                except DataError as exc:
                    cache[j][key] = exc
            return cache[j][key]

        def part_of(j: int, kind, region: str):   # a part of another kind's input (DescriptorHog's descriptor)
            got = computed(j, kind, region)
            if isinstance(got, DataError):
                raise got
            return got

        def inputs_of(j: int, kind, region: str):
            with timed(profile, "cut"):
                return computed(j, kind, region)

        out = [{} for _ in found]
        for m, member in enumerate(self.members):
            made = member.record
            read = [inputs_of(j, made.kind, made.region) for j in range(len(found))]
            good = [j for j, x in enumerate(read) if not isinstance(x, DataError)]
            for j in set(range(len(found))) - set(good):
                out[j].setdefault(ERROR, []).append(f"{self.members_record[m]['name']}: {read[j]}")
            if not good:
                continue
            face_inputs = None
            if member.gender_model is not None:   # the bundled gender model's input: shared like any other
                face_inputs = []
                for j in good:
                    x = inputs_of(j, made.gender_kind, "face")
                    face_inputs.append(None if isinstance(x, DataError) else x[0])
            with timed(profile, "gender input"):
                gender = member.gender(pd.DataFrame(index=range(len(good))), face_inputs)
            with timed(profile, "predict"):
                answered = member.answer_photos([read[j] for j in good], gender)
            for j, values in zip(good, answered[member_columns(made)].to_dict("records")):
                out[j].update({k: _plain(v) for k, v in values.items()})
        return out

    def _rows(self, n: int, described: list, answers: list[dict], counts: dict, errors: list) -> pd.DataFrame:
        columns = [c for member in self.members for c in member_columns(member.record)]
        table = pd.DataFrame(index=range(n), columns=[*columns, FACES, ERROR, FACES_FOUND], dtype=object)
        listed: dict[int, list] = {}
        for (i, face, is_subject), found in zip(described, answers):
            x0, y0, x1, y1 = face["box"]
            listed.setdefault(i, []).append({"box": [round(x0), round(y0), round(x1 - x0), round(y1 - y0)],
                                             "confidence": round(float(face["confidence"]), 4),
                                             "subject": is_subject,
                                             **{c: found.get(c) for c in columns},
                                             **({ERROR: "; ".join(found[ERROR])} if ERROR in found else {})})
            if is_subject:
                table.loc[i, columns] = [found.get(c) for c in columns]
                if ERROR in found and errors[i] is None:
                    errors[i] = "; ".join(found[ERROR])
        for i in range(n):
            table.at[i, FACES] = counts.get(i)
            table.at[i, ERROR] = errors[i]
            table.at[i, FACES_FOUND] = listed.get(i, [])
        return table.astype(object).where(table.notna(), None)


def as_json_text(answer: pd.DataFrame) -> pd.DataFrame:
    """`faces_found` as JSON text: what a table cell holds (CSV, Parquet, Spark: spark_udf's result type is
    read from the signature's columns, and a list of per-member structs has no fixed type there)."""
    return answer.assign(**{FACES_FOUND: [json.dumps(found) for found in answer[FACES_FOUND]]})


def _plain(value):
    """A numpy or pandas scalar as a plain Python value (None for a gap), for JSON."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value
