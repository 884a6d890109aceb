"""The logged model: the photo-taking pyfunc (faceattr/serving), logged from code (serving/entry.py: no
pickle), with its Keras model(s) and its record (faceattr/record.py) as artifacts, faceattr's own code and
pinned requirements, so `mlflow models serve` needs nothing else."""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import mlflow
import pandas as pd

from faceattr import names, record
from faceattr.tracking.outbox import Recorder

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ENTRY = PACKAGE_DIR / "serving" / "entry.py"     # the served model's code: `set_model(FaceattrModel())`
PINNED = ["mlflow==3.17.2", "tensorflow==2.21.0", "keras==3.15.1", "mtcnn==1.0.0", "numpy", "pandas", "pillow",
          "pyyaml", "pydantic", "scikit-learn", "scipy"]


def log_model(recorder: Recorder, model: keras.Model, config: dict, input_example: pd.DataFrame,
              gender_model: keras.Model | None = None, served: dict | None = None, made_by: str | None = None):
    """Log the photo-taking pyfunc (faceattr/serving) carrying the Keras model(s), the model's record and
    faceattr's code into the active run; when `recorder`'s tracking failed, keep it in the outbox instead
    (None). `served`: settings chosen on validation (tasks.Task.calibrate), kept in the record.

    `made_by` (regions.MADE_BY): how the training crops were made; the record's `crops` keeps it with
    the region, and the served model refuses whole photos its cut cannot match (regions.photo_refusal).

    A pyfunc rather than `mlflow.keras.log_model`: it takes photos, and the keras flavour crashes
    when given an input example (MLflow issue #16183).
    """
    made = record.make(config, gender_model, served, made_by)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"keras_model": str(Path(tmp, names.MODEL)), "record": str(Path(tmp, names.RECORD))}
        model.save(artifacts["keras_model"])
        Path(artifacts["record"]).write_text(made.model_dump_json(indent=1))
        if gender_model is not None:
            artifacts["gender_model"] = str(Path(tmp, names.GENDER_MODEL))
            gender_model.save(artifacts["gender_model"])
        info = recorder.call("log model", _log_pyfunc, artifacts, made, input_example)
        if info is None:   # offline: keep what `faceattr sync` needs to log the same model
            keep = recorder.dir / "model"
            keep.mkdir(exist_ok=True)
            for path in artifacts.values():
                shutil.copy2(path, keep / Path(path).name)
            example = input_example.assign(image=[base64.b64encode(b).decode("ascii") for b in input_example["image"]])
            example.to_json(keep / names.INPUT_EXAMPLE, orient="split")
            print(f"faceattr: the trained model is kept in {keep}", file=sys.stderr)
        return info


def _log_pyfunc(artifacts: dict, made: record.ModelRecord, input_example: pd.DataFrame):
    from faceattr.serving import signature

    return mlflow.pyfunc.log_model(
        name="model", python_model=str(ENTRY), artifacts=artifacts, code_paths=[str(PACKAGE_DIR)],
        signature=signature(made), input_example=input_example, pip_requirements=PINNED + made.pins())


BUNDLE_ENTRY = PACKAGE_DIR / "serving" / "bundle_entry.py"   # a bundle's code: `set_model(BundleModel())`
MEMBER_FILES = {"keras_model": names.MODEL, "record": names.RECORD, "gender_model": names.GENDER_MODEL}


def log_bundle(members: list[dict], input_example: pd.DataFrame):
    """Log a bundle (faceattr/serving/bundle.py) into the active run: `members` are
    [{"name", "version", "source", "folder": a downloaded logged model's `artifacts/` folder, "record"}],
    whose Keras files and records become the bundle's own artifacts (`m<i>.keras_model`, ...), so the
    bundle answers the same whatever happens to the members' versions later."""
    from faceattr.serving import bundle

    artifacts = {}
    for i, member in enumerate(members):
        for key, file in MEMBER_FILES.items():
            if (Path(member["folder"]) / file).is_file():
                artifacts[f"m{i}.{key}"] = str(Path(member["folder"]) / file)
    pins = sorted({pin for member in members for pin in member["record"].pins()})
    with tempfile.TemporaryDirectory() as tmp:
        described = Path(tmp, bundle.BUNDLE_RECORD)
        described.write_text(json.dumps({"members": [{k: m[k] for k in ("name", "version", "source")}
                                                     for m in members]}, indent=1))
        artifacts[bundle.BUNDLE_RECORD] = str(described)
        return mlflow.pyfunc.log_model(
            name="bundle", python_model=str(BUNDLE_ENTRY), artifacts=artifacts, code_paths=[str(PACKAGE_DIR)],
            signature=bundle.signature([m["record"] for m in members]), input_example=input_example,
            pip_requirements=PINNED + pins)


def kept_model(folder: Path) -> bool:
    """Whether an outbox folder holds a model `log_model` kept (its record, or an older outbox's spec)."""
    return (folder / names.RECORD).is_file() or (folder / names.SPEC).is_file()


def log_saved_model(folder: Path):
    """Log a model that `log_model` kept in an outbox (`faceattr sync`), in the active run; an outbox kept
    before the record (spec.json) is logged with its record read from the spec."""
    folder = Path(folder)
    found = folder / names.RECORD if (folder / names.RECORD).is_file() else folder / names.SPEC
    made = record.read(json.loads(found.read_text()), str(found))
    example = pd.read_json(folder / names.INPUT_EXAMPLE, orient="split", dtype=False)
    example["image"] = [base64.b64decode(text) for text in example["image"]]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"keras_model": str(folder / names.MODEL), "record": str(Path(tmp, names.RECORD))}
        Path(artifacts["record"]).write_text(made.model_dump_json(indent=1))
        if (folder / names.GENDER_MODEL).is_file():
            artifacts["gender_model"] = str(folder / names.GENDER_MODEL)
        return _log_pyfunc(artifacts, made, example)
