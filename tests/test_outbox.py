"""The outbox (faceattr/tracking/outbox.py) without servers: a dead http tracking URI, then sync into sqlite."""

import json
import socket

import mlflow
import numpy as np
import pytest

from faceattr import tracking
from faceattr.tracking import outbox, sync


@pytest.fixture
def dead_server(mlflow_store, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("FACEATTR_OUTBOX", str(tmp_path / "outbox"))
    mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
    yield
    mlflow.set_tracking_uri(mlflow_store)


def test_a_dead_server_leaves_the_run_in_the_outbox_and_sync_uploads_it(dead_server, mlflow_store, tmp_path, capsys):
    with tracking.recorded_run("eyes", "eyes-test", tags={"faceattr.experiment": "eyes"}) as run:
        run.log_params({"train.epochs": 3, "model.dense_0": 8})
        for epoch in range(3):
            run.log_metrics({"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1)}, step=epoch)
        tracking.log_results(run, {"val_mse": 0.1}, {"collapsed": "false"}, [0.5, 0.25])
        assert run.register_model(None, "eyes") is None
    box = run.outbox
    assert box is not None and box.parent == tmp_path / "outbox"
    assert "training goes on" in capsys.readouterr().err
    assert json.loads((box / "artifacts" / "collapse_check.json").read_text())["first_training_outputs"] == [0.5, 0.25]

    mlflow.set_tracking_uri(mlflow_store)
    result = sync.sync(box)
    run = mlflow.get_run(result["run_id"])
    assert run.data.params["train.epochs"] == "3" and run.data.tags["faceattr.experiment"] == "eyes"
    assert run.data.tags["collapsed"] == "false" and run.data.metrics["val_mse"] == 0.1
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert run.info.status == "FINISHED" and run.info.run_name == "eyes-test"
    assert "collapse_check.json" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    from faceattr.errors import FaceattrError

    with pytest.raises(FaceattrError, match="already synced"):
        sync.sync(box)


def test_no_failure_no_outbox_left(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEATTR_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setattr(outbox, "remote_tracking", lambda: True)
    monkeypatch.setattr(tracking, "remote_tracking", lambda: True)
    with tracking.recorded_run("eyes", "eyes-ok") as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert run.outbox is None and not any((tmp_path / "outbox").iterdir())


def test_code_errors_are_not_swallowed(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEATTR_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setattr(tracking, "remote_tracking", lambda: True)
    with pytest.raises(ZeroDivisionError):
        with tracking.recorded_run("eyes", "eyes-bug") as run:
            run.recorder.call("boom", lambda: 1 / 0)


def test_a_run_whose_model_cannot_be_logged_keeps_it_and_sync_logs_and_registers_it(mlflow_store, synthetic_cache,
                                                                                      tmp_path, monkeypatch):
    """A real `eyes` run against a tracking server (the store answers) whose artifact store fails when the
    model is uploaded: the trained model is kept in the outbox, and `faceattr sync` logs and registers a
    model that answers exactly as the one trained."""
    from mlflow.exceptions import MlflowException

    from faceattr import config, experiment

    monkeypatch.setenv("FACEATTR_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setattr(outbox, "remote_tracking", lambda: True)
    monkeypatch.setattr(tracking, "remote_tracking", lambda: True)
    cfg = config.load("eyes", {"data.size": 20, "epochs": 1, "train.verbose": 0, "evaluation.gallery": 0,
                               "data.gender": "labels"})
    with monkeypatch.context() as failing:
        def upload_fails(*args, **kwargs):
            raise MlflowException("artifact store unreachable")

        failing.setattr(mlflow.pyfunc, "log_model", upload_fails)
        outcome = experiment.train(cfg)
    assert outcome.model_uri is None and outcome.version is None and outcome.outbox is not None
    assert mlflow.search_registered_models() == []

    result = sync.sync(outcome.outbox)
    assert result["registered"] is not None and result["model_uri"]
    served = mlflow.pyfunc.load_model(result["model_uri"]).unwrap_python_model()
    val = experiment.prepare(cfg).splits["val"]
    trained = outcome.model.predict({"image": val.images.astype("float32"), "gender": val.gender}, verbose=0)
    answers = served.predict_arrays(val.images, val.gender)["eyes"].to_numpy()
    assert answers == pytest.approx(np.clip(np.asarray(trained).reshape(-1), 0, 1), abs=1e-5)
