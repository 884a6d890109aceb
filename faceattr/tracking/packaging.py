"""The logged model: the photo-taking pyfunc (faceattr/serving) with its Keras model(s), faceattr's own
code and pinned requirements, so `mlflow models serve` needs nothing else."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import mlflow

from faceattr import models, names, tasks
from faceattr.tracking.outbox import Recorder

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PINNED = ["mlflow==3.17.2", "tensorflow==2.21.0", "keras==3.15.1", "mtcnn==1.0.0", "numpy", "pandas", "pillow",
          "pyyaml", "pydantic", "scikit-learn", "scipy"]
# A model reading face descriptors computes them when serving: dlib and its packaged weights
# (face_recognition_models imports pkg_resources, which setuptools 81 removed).
DESCRIPTOR_PINS = ["dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0", "setuptools<81"]


def log_model(recorder: Recorder, model: keras.Model, config: dict, input_example,
              gender_model: keras.Model | None = None, served: dict | None = None, made_by: str | None = None):
    """Log the photo-taking pyfunc (faceattr/serving) carrying the Keras model(s) and faceattr's code
    into the active run; when `recorder`'s tracking failed, keep it in the outbox instead (None).
    `served`: settings chosen on validation (tasks.Task.calibrate), kept in the spec.

    `made_by` (regions.MADE_BY): how the training crops were made; the spec's `crops` records it with
    the region, and the served model refuses whole photos its cut cannot match (regions.photo_refusal).

    A pyfunc rather than `mlflow.keras.log_model`: it takes photos, and the keras flavour crashes
    when given an input example (MLflow issue #16183).
    """
    spec = {"name": config["name"], "task": config["task"], "target": config["target"],
            "region": config["region"], "gender_model": gender_model is not None, "input": models.reads(config),
            **tasks.of(config).served_spec(config), **(served or {})}
    if made_by is not None:
        spec["crops"] = {"region": config["region"], "made_by": made_by}
    if gender_model is not None and models.input_name(gender_model) == "descriptor":
        spec["gender_input"] = "descriptor"
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"keras_model": str(Path(tmp, names.MODEL)), "spec": str(Path(tmp, names.SPEC))}
        model.save(artifacts["keras_model"])
        Path(artifacts["spec"]).write_text(json.dumps(spec))
        if gender_model is not None:
            artifacts["gender_model"] = str(Path(tmp, names.GENDER_MODEL))
            gender_model.save(artifacts["gender_model"])
        info = recorder.call("log model", _log_pyfunc, artifacts, spec, input_example)
        if info is None:   # offline: keep what `faceattr sync` needs to log the same model
            keep = recorder.dir / "model"
            keep.mkdir(exist_ok=True)
            for path in artifacts.values():
                shutil.copy2(path, keep / Path(path).name)
            input_example.to_json(keep / names.INPUT_EXAMPLE, orient="split")
            print(f"faceattr: the trained model is kept in {keep}", file=sys.stderr)
        return info


def _log_pyfunc(artifacts: dict, spec: dict, input_example):
    from faceattr.serving import FaceattrModel, signature

    return mlflow.pyfunc.log_model(
        name="model", python_model=FaceattrModel(), artifacts=artifacts, code_paths=[str(PACKAGE_DIR)],
        signature=signature(spec), input_example=input_example,
        pip_requirements=PINNED + (DESCRIPTOR_PINS if "descriptor" in (spec.get("input"), spec.get("gender_input")) else []))


def log_saved_model(folder: Path):
    """Log a model that `log_model` kept in an outbox (`faceattr sync`), in the active run."""
    import pandas as pd

    folder = Path(folder)
    spec = json.loads((folder / names.SPEC).read_text())
    artifacts = {"keras_model": str(folder / names.MODEL), "spec": str(folder / names.SPEC)}
    if (folder / names.GENDER_MODEL).is_file():
        artifacts["gender_model"] = str(folder / names.GENDER_MODEL)
    example = pd.read_json(folder / names.INPUT_EXAMPLE, orient="split", dtype=False)
    return _log_pyfunc(artifacts, spec, example)
