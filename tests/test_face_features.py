"""Backbone dlib-resnet end to end: descriptors of the photo, a head trained on them, served from photos."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr import config, experiment, models, record, serving, tasks
from faceattr.models import inputs
from faceattr.errors import DataError

SMALL = {"data.size": 40, "epochs": 1, "train.verbose": 0}


def test_every_task_default_backbone_reads_crops():
    """Every task's default backbone reads crops; dlib-resnet reads face descriptors (models/inputs.py)."""
    assert all(models.backbone_input(task.backbones[0]).name == "image" for task in tasks.TASKS.values())
    assert models.backbone_input("dlib-resnet").name == "descriptor"


def test_switching_to_dlib_resnet_starts_from_its_defaults():
    cfg = config.load("gender", {"model.backbone": "dlib-resnet"})
    assert cfg["model"] == {"backbone": "dlib-resnet", "head": "auto", "dropout": 0.2}
    assert cfg["train"]["learning_rate"] == 0.01
    assert config.load("gender", {"model.backbone": "dlib-resnet", "learning_rate": "0.002"})["train"]["learning_rate"] == 0.002
    assert models.build(cfg).count_params() == 128 * 2 + 2          # the two-way softmax on the descriptor
    identity = config.load("identity", {"backbone": "dlib-resnet", "weights": ""})
    assert models.build(identity).count_params() == 129              # the seeds' one unit
    assert models.widths(config.load("identity", {"backbone": "dlib-resnet", "model.head": "[64]"})) == "dlib-resnet-fc64"


@pytest.mark.slow
def test_dlib_gender_trains_logs_and_serves_from_photos(mlflow_store, synthetic_cache):
    import mlflow

    outcome = experiment.train(config.load("gender", {**SMALL, "model.backbone": "dlib-resnet"}))
    run = mlflow.get_run(mlflow.search_runs(experiment_names=["gender"], output_format="list")[0].info.run_id)
    assert run.data.params["model.backbone"] == "dlib-resnet" and "val_accuracy" in run.data.metrics
    served = serving.load(outcome.model_uri)
    assert served.record.reads == "descriptor"
    requirements = open(mlflow.pyfunc.get_model_dependencies(outcome.model_uri)).read()
    assert "dlib-bin==" in requirements and "face_recognition_models==" in requirements
    prepared = experiment.gather(config.load("gender", {**SMALL, "model.backbone": "dlib-resnet"}))
    from faceattr.features.face_descriptor import example_face

    face = serving.encode_image(example_face(prepared.splits["val"].frame))
    answer = served.predict(None, pd.DataFrame({"image": [face], "kind": ["crop"]}))
    assert list(answer.columns) == ["p_female", "gender", "faces", "error"] and answer["gender"][0] in ("male", "female")
    # the served descriptor is the one training computed (same photo, same face): the same answer
    row = prepared.splits["val"]
    direct = experiment.scores(outcome.model, prepared.config, row.take([0]))
    assert abs(answer["p_female"][0] - direct[0]) < 0.15


def test_a_photo_without_a_face_is_refused_with_the_reason():
    cfg = config.load("gender", {"model.backbone": "dlib-resnet"})
    served = serving.FaceattrModel()   # as load_context builds it, around an untrained head
    served.record = record.make(cfg)
    served.model, served.gender_model = models.build(cfg), None
    served.warm_up()
    noise = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    out = served.predict(None, pd.DataFrame({"image": [serving.encode_image(noise)]}))
    assert out["p_female"][0] is None and "no face" in out["error"][0]     # the row says why, row by row


def test_a_data_set_of_faceless_photos_is_refused_listing_each_file(tmp_path, synthetic_cache):
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"noise{i}.png")
    pd.DataFrame({"path": [f"noise{i}.png" for i in range(12)], "gender": ["male", "female"] * 6}
                 ).to_csv(tmp_path / "labels.csv", index=False)
    cfg = config.load("gender", {"data": str(tmp_path / "labels.csv"), "data.image_region": "face",
                                 "model.backbone": "dlib-resnet"})
    with pytest.raises(DataError, match=r"12 of 12 photos .*no usable face") as info:
        experiment.gather(cfg)
    assert all(f"noise{i}.png: no face" in str(info.value) for i in range(12))


@pytest.mark.slow
def test_identity_logs_the_cosine_baseline_beside_the_head(mlflow_store, synthetic_cache):
    import mlflow

    cfg = config.load("identity", {"backbone": "dlib-resnet", "weights": "", "data.size": 60, "data.persons": 6,
                                   "epochs": 5, "train.verbose": 0})
    outcome = experiment.train(cfg, register=False)
    assert 0.8 <= outcome.metrics["val_cosine_baseline_roc_auc"] <= 1.0
    run = mlflow.search_runs(experiment_names=["identity"], output_format="list")[0]
    assert {"val_cosine_baseline_roc_auc", "test_cosine_baseline_roc_auc", "val_roc_auc"} <= set(run.data.metrics)


@pytest.mark.slow
def test_a_regression_reads_its_gender_from_a_dlib_champion(mlflow_store, synthetic_cache):
    from faceattr import promotion

    gender = experiment.train(config.load("gender", {**SMALL, "data.size": 100, "epochs": 3,
                                                     "model.backbone": "dlib-resnet"}))
    lenient = promotion.Policy(model="gender", metric="accuracy", higher_is_better=True, thresholds={},
                               require_no_collapse=False)
    assert promotion.promote("gender", gender.version, policy=lenient).action == "promoted"
    mouth = experiment.train(config.load("mouth", {**SMALL, "data.size": 100}))
    import mlflow

    run = mlflow.search_runs(experiment_names=["mouth"], output_format="list")[0]
    assert run.data.params["gender_source"] == f"model:gender/{gender.version}"
    served = serving.load(mouth.model_uri)
    assert served.record.gender_reads == "descriptor" and inputs.of_model(served.gender_model).name == "descriptor"
    prepared = experiment.gather(config.load("mouth", {**SMALL, "data.size": 100}))
    # the regression was trained on the champion's answers for each photo: not the unknown [0.5, 0.5]
    assert np.abs(prepared.splits["train"].gender - 0.5).max() > 0.01
