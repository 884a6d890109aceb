"""tracking.py details that a whole training run would not pin down."""

import json
import time
from types import SimpleNamespace
from unittest import mock

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from faceattr import config as config_module
from faceattr import names, tracking
from faceattr.data.loading import Data
from faceattr import promotion


def test_a_data_set_logged_by_two_processes_at_once_is_linked_not_lost(mlflow_store):
    """Tuning workers log the same data set together; MLflow's check-then-insert can lose that race."""
    dataset = mlflow.data.from_pandas(pd.DataFrame({"a": [1, 2]}), source="x", name="n")
    real, calls = mlflow.log_input, []

    def lost_race(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
        return real(*args, **kwargs)

    with mlflow.start_run() as run, mock.patch("mlflow.log_input", lost_race):
        tracking._log_input(dataset, "training")
    assert len(calls) == 2
    assert [i.dataset.name for i in mlflow.get_run(run.info.run_id).inputs.dataset_inputs] == ["n"]


def _data(source="somewhere.csv") -> Data:
    splits = ["train"] * 5 + ["val"] * 3 + ["test"] * 2
    frame = pd.DataFrame({"path": [f"/photos/{i}.png" for i in range(10)], "split": splits,
                          "content_sha1": [f"{i:040x}" for i in range(10)], "eyes": np.linspace(0, 1, 10)})
    return Data("tenrows", source, frame, np.zeros((10, 2, 2, 3), np.float32))


def test_each_split_is_an_input_of_the_run_with_its_own_context_and_rows(mlflow_store):
    with tracking.start_run("splits") as run:
        tracking.log_data(run, _data())
    inputs = mlflow.get_run(run.run_id).inputs.dataset_inputs
    found = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    assert sorted(found) == ["test", "training", "validation"]
    rows = {context: json.loads(dataset.profile)["num_rows"] for context, dataset in found.items()}
    assert rows == {"training": 5, "validation": 3, "test": 2}
    assert {json.loads(d.source)["uri"] for d in found.values()} == {"somewhere.csv"}


def test_evaluation_metrics_are_linked_to_the_logged_model_and_their_split(mlflow_store):
    with tracking.start_run("linked") as run:
        tracking.log_data(run, _data())
        model_id = mlflow.initialize_logged_model(name="model").model_id
        tracking.log_results(run, {"val_mse": 0.1, "baseline_ratio": 2.0, "test_mse": 0.2, "epochs_trained": 3},
                                    {"collapsed": "false"}, [0.5], {"val": ["val_mse", "baseline_ratio"],
                                                                     "test": ["test_mse"]}, model_id)
    on_model = {m.key: m for m in mlflow.get_logged_model(model_id).metrics}
    assert {k: on_model[k].dataset_name for k in ("val_mse", "baseline_ratio", "test_mse")} == \
        {"val_mse": "tenrows-val", "baseline_ratio": "tenrows-val", "test_mse": "tenrows-test"}
    assert on_model["epochs_trained"].dataset_name is None and on_model["test_mse"].value == 0.2
    assert mlflow.get_run(run.run_id).data.metrics["val_mse"] == 0.1   # and on the run, as before


def test_a_training_run_samples_system_metrics_under_its_node(mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_NODE_ID", raising=False)   # restored after the test
    tracking.system_metrics_node("worker-7")
    with tracking.start_run("sampled") as run:
        deadline = time.monotonic() + 60
        while "system/worker-7/cpu_utilization_percentage" not in mlflow.get_run(run.run_id).data.metrics:
            assert time.monotonic() < deadline, "no system metric logged within 60 s"
            time.sleep(0.1)   # polling for the monitor thread's first sample
    assert "system/worker-7/system_memory_usage_megabytes" in mlflow.get_run(run.run_id).data.metrics


def test_the_validated_config_is_logged_whole_and_read_back_by_promotion(mlflow_store):
    config = config_module.load("eyes", {"data": "elsewhere.csv", "region": "eye", "model.dense_0": 64})
    with tracking.start_run("configured") as run:
        tracking.log_config(run, config)
    assert json.loads(tracking.read_artifact(run.run_id, names.CONFIG)) == config
    version = SimpleNamespace(run_id=run.run_id, version="1", name="eyes")
    params = mlflow.get_run(run.run_id).data.params          # every key also a dotted param, to search runs by
    assert params["model.dense_0"] == "64" and params["data.source"] == "elsewhere.csv"
    # config.json, not params, is what promotion reads: tests/test_rules.py makes the two differ
    assert promotion.training_config(version, "other.csv")["data"]["source"] == "other.csv"


def test_a_run_logged_before_config_json_is_read_from_its_params(mlflow_store):
    """Older runs logged the merged, unvalidated config as params (no backbone, no padding/pool keys),
    beside params that name no config key."""
    raw = config_module._merge(config_module.defaults(), {
        "name": "eyes", "task": "regression", "target": "eyes", "region": "eye",
        "data": {"source": "old.csv", "folders": {"open": {"eyes": 1.0}}, "split": "phash"},
        "model": {"conv": [{"filters": 8}, {"filters": 16, "pool": True}], "dropout": 0.1, "dense_0": 32,
                  "dense_1": 16}})
    params = {k: str(v) for k, v in config_module.flatten(raw).items()}
    params.update({"data.digest": "abc", "data.n_train": "5", "gender_source": "labels", "epochs": "3",
                   "model.parameters": "1234", "data": "old.csv"})
    with tracking.start_run("old") as run:
        run.log_params(params)
    config = tracking.run_config(mlflow.get_run(run.run_id))
    assert config["data"]["source"] == "old.csv" and config["data"]["split"] == "phash"
    assert config["data"]["folders"] == {"open": {"eyes": 1.0}}
    assert config["model"] == {"backbone": "cnn", "dropout": 0.1, "dense_0": 32, "dense_1": 16,
                               "conv": [{"filters": 8, "padding": "valid", "pool": False},
                                        {"filters": 16, "padding": "valid", "pool": True}]}
    assert config["train"]["min_lr"] == 1e-6 and config["evaluation"]["slices"] == {}
    # `target: eyes`, logged as one param before targets were declared, reads as the declared 0..1 score
    assert config["target"] == {"column": "eyes", "range": [0.0, 1.0], "unit": None, "reads": ""}
