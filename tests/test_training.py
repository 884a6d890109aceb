"""One short tracked run of every experiment on a small synthetic set, checked in a real MLflow store."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from faceattr import config, experiment, names
from faceattr.serving import encode_image

SMALL = {"epochs": 2, "data.size": 120, "train.verbose": 0}

pytestmark = pytest.mark.slow   # each test trains real models (about 10 s each on 2 cores)


def run_of(outcome_uri):
    client = mlflow.MlflowClient()
    model = mlflow.get_logged_model(outcome_uri.split("/")[-1])
    return client, client.get_run(model.source_run_id)


@pytest.mark.parametrize("name", ["eyes", "mouth", "background", "gender"])
def test_a_run_logs_params_epoch_metrics_results_plots_data_and_model(name, mlflow_store, synthetic_cache):
    outcome = experiment.train(config.load(name, SMALL))
    client, run = run_of(outcome.model_uri)
    assert client.get_experiment(run.info.experiment_id).name == name
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    # every key of the resolved config, flattened
    assert params["train.epochs"] == "2" and params["data.size"] == "120"
    assert params["model.conv.0.filters"] == str(config.load(name)["model"]["conv"][0]["filters"])
    assert int(params["model.parameters"]) > 0 and params["data.digest"]
    # per-epoch losses and learning rate with step = epoch
    for key in ("loss", "val_loss", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [0, 1], key
    assert tags["faceattr.experiment"] == name and tags["collapsed"] in ("true", "false")
    assert tags["mlflow.runName"].startswith(name)
    assert "collapse_std_ratio" in metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"collapse_check.json", "slices.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/predicted_vs_true.png", "plots/error_gallery.png"} <= plots
    first = json.loads(open(client.download_artifacts(run.info.run_id, "collapse_check.json")).read())
    assert len(first["first_training_outputs"]) == 15
    if name == "gender":
        assert {"val_accuracy", "val_log_loss", "val_majority_accuracy", "test_accuracy"} <= set(metrics)
        assert params["gender_source"].startswith("none")
    else:
        assert {"val_mse", "baseline_mse", "baseline_mse_pooled", "baseline_ratio", "test_mse",
                "baseline_mean_male", "baseline_mse_female"} <= set(metrics)
        if metrics["val_mse"] > 0:   # a tiny validation split can be all one label, predicted exactly
            assert metrics["baseline_ratio"] == pytest.approx(metrics["baseline_mse"] / metrics["val_mse"])
        assert params["gender_source"] == "labels" and params["baseline_grouping"] == "per_gender"
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert plots == {"plots/learning_curves.png", "plots/predicted_vs_true.png",
                         "plots/crop_check.png", "plots/error_gallery.png"}
    inputs = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
              for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "training", "validation"]
    assert inputs["validation"].name.startswith("synthetic-v") and inputs["validation"].name.endswith("-val")
    assert all(d.digest for d in inputs.values())
    # the evaluation's metrics on the logged model's page, each linked to its split's data set
    on_model = {m.key: m for m in mlflow.get_logged_model(outcome.model_uri.split("/")[-1]).metrics}
    headline = "val_accuracy" if name == "gender" else "val_mse"
    assert on_model[headline].value == metrics[headline]
    assert on_model[headline].dataset_name == inputs["validation"].name
    assert on_model[headline.replace("val_", "test_")].dataset_name == inputs["test"].name
    # the validated config, whole, and the stages' seconds
    assert json.loads(open(client.download_artifacts(run.info.run_id, names.CONFIG)).read()) == config.load(name, SMALL)
    assert {"time_fit", "time_evaluation", "time_views", "time_model", "time_registration"} <= set(metrics)


def test_logged_model_takes_photos_and_has_a_signature_and_example(mlflow_store, synthetic_cache):
    outcome = experiment.train(config.load("eyes", SMALL))
    info = mlflow.models.get_model_info(outcome.model_uri)
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["image", "kind", "gender", "p_female"]
    model = mlflow.pyfunc.load_model(outcome.model_uri)
    example = model.input_example
    assert list(example.columns) == ["image", "kind", "gender"]
    out = model.predict(example)
    assert list(out.columns) == ["eyes", "faces", "error"] and 0 <= out["eyes"][0] <= 1 and out["error"][0] is None
    crop = np.random.default_rng(1).integers(0, 255, (50, 90, 3), dtype=np.uint8)  # any size is resized
    out = model.predict(pd.DataFrame({"image": [encode_image(crop, "JPEG")] * 2}))
    assert len(out) == 2


def test_regressions_use_the_registered_gender_champion(mlflow_store, synthetic_cache):
    gender = experiment.train(config.load("gender", SMALL))
    version = mlflow.register_model(gender.model_uri, "gender")
    mlflow.MlflowClient().set_registered_model_alias("gender", "champion", version.version)
    outcome = experiment.train(config.load("mouth", SMALL))
    _, run = run_of(outcome.model_uri)
    assert run.data.params["gender_source"] == f"model:gender/{version.version}"
    served = mlflow.pyfunc.load_model(outcome.model_uri).unwrap_python_model()
    assert served.gender_model is not None   # the served model carries the gender model it trained with
    labels_only = experiment.train(config.load("mouth", {**SMALL, "data.gender": "labels"}))
    assert run_of(labels_only.model_uri)[1].data.params["gender_source"] == "labels"


def test_two_experiments_in_one_process_log_to_their_own_mlflow_experiments(mlflow_store, synthetic_cache):
    first = experiment.train(config.load("eyes", {**SMALL, "epochs": 1}))
    second = experiment.train(config.load("mouth", {**SMALL, "epochs": 1}))
    client = mlflow.MlflowClient()
    names = [client.get_experiment(run_of(o.model_uri)[1].info.experiment_id).name for o in (first, second)]
    assert names == ["eyes", "mouth"]
