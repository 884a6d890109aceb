"""Every MLflow run write goes through here: training runs (params, per-epoch metrics, data set,
plots), tuning's parent and child runs, promotion audit runs, prepare's and evaluation's runs.

With a remote tracking URI, `recorded_run` journals the run into a local outbox (tracking/outbox.py)
so nothing is lost when the server dies; tracking/packaging.py logs the served model and
tracking/sync.py uploads an outbox. Only tracking, registry and serving import mlflow
(pyproject.toml's import-linter contract).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path

import keras
import mlflow
import numpy as np

from faceattr import config as config_module
from faceattr import models, tasks
from faceattr.data.loading import Data
from faceattr.tracking.outbox import RECORDER, remote_tracking
from faceattr.tracking.packaging import log_model  # noqa: F401  (the run's model: tracking.log_model)



_experiment_we_set: str | None = None


def use_experiment(name: str) -> None:
    """Log to the MLflow experiment named after ours, unless `mlflow run` or the user chose one.

    `mlflow.set_experiment` itself exports MLFLOW_EXPERIMENT_ID, so the id we set last is not
    taken for the user's choice (else a second experiment in one process would log into the first).
    """
    global _experiment_we_set
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    chosen = (os.environ.get("MLFLOW_RUN_ID") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
              or (env_id and env_id != _experiment_we_set))
    if not chosen:
        _experiment_we_set = mlflow.set_experiment(name).experiment_id


def start_run(run_name: str, nested: bool = False, tags: dict | None = None, parent_run_id: str | None = None,
              experiment_id: str | None = None):
    """Start (or, under `mlflow run`, resume) a run and name it; use as a context manager.
    `nested` runs are children of the active run or of `parent_run_id` (tuning's trials)."""
    run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") and not nested else run_name,
                           nested=nested, parent_run_id=parent_run_id, experiment_id=experiment_id)
    mlflow.set_tags({"mlflow.runName": run_name, **(tags or {})})
    return run


def in_run() -> bool:
    return mlflow.active_run() is not None


def active_run_id() -> str:
    return mlflow.active_run().info.run_id


def get_run(run_id: str):
    """The run with its params, metrics and tags (a read: never through the outbox)."""
    return mlflow.MlflowClient().get_run(run_id)


def find_runs(experiment_id: str, query: str) -> list:
    """Runs of `experiment_id` matching the MLflow search `query`, oldest first."""
    return mlflow.search_runs([experiment_id], query, output_format="list", max_results=50000,
                              order_by=["attributes.start_time ASC"])


def set_terminated(run_id: str, status: str) -> None:
    """End a run other than the active one (KILLED: one a killed earlier attempt left RUNNING)."""
    mlflow.MlflowClient().set_terminated(run_id, status)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    RECORDER.call("log artifact", mlflow.log_artifact, str(path), artifact_path)


class audit_run:
    """A run in experiment `experiment` made with the client, so a `mlflow run` parent run
    (MLFLOW_RUN_ID) is not taken over (promotion decisions); that parent, if any, gets a tag
    `link_tag` pointing here. `log` writes its tags, params, metrics and a JSON record of them."""

    def __init__(self, experiment: str, run_name: str, tags: dict, link_tag: str, record: str):
        self.experiment, self.run_name, self.tags = experiment, run_name, tags
        self.link_tag, self.record = link_tag, record

    def __enter__(self):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
        parent = os.environ.get("MLFLOW_RUN_ID")
        tags = {"mlflow.runName": self.run_name, **self.tags}
        if parent:
            tags["faceattr.launched_by_run"] = parent
        self.run = client.create_run(experiment_id, tags=tags)
        if parent:
            try:
                client.set_tag(parent, self.link_tag, self.run.info.run_id)
            except Exception:  # the parent lives on another server: the link is a courtesy
                pass
        return self

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log(self, tags: dict, params: dict, metrics: dict) -> None:
        client = mlflow.MlflowClient()
        for k, v in tags.items():
            client.set_tag(self.run_id, k, str(v)[:5000])
        for k, v in params.items():
            client.log_param(self.run_id, k, v)
        for k, v in metrics.items():
            client.log_metric(self.run_id, k, v)
        if params or metrics:
            client.log_dict(self.run_id, {"params": params, "metrics": metrics, "tags": tags}, self.record)

    def __exit__(self, exc_type, exc, tb):
        client = mlflow.MlflowClient()
        if exc is not None:
            client.set_tag(self.run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(self.run_id, "FINISHED" if exc is None else "FAILED")
        return False


@contextlib.contextmanager
def recorded_run(experiment: str, run_name: str, tags: dict | None = None):
    """`start_run` for `faceattr train`: with a remote tracking URI, through the outbox (outbox.py).

    Yields the outbox directory holding the run when tracking failed on the way (else None): read
    `RECORDER`'s state after the block through `last_outbox()`.
    """
    global _LAST_OUTBOX
    _LAST_OUTBOX = None
    if not remote_tracking():
        with start_run(run_name, tags=tags) as run:
            yield run
        return
    RECORDER.begin(experiment, run_name, tags or {})
    RECORDER.call("start run", start_run, run_name, tags=tags)
    ok = False
    try:
        yield mlflow.active_run()
        ok = True
    finally:
        if RECORDER.failed:
            while mlflow.active_run():   # pops the run even when the server cannot be told
                try:
                    mlflow.end_run("FINISHED" if ok else "FAILED")
                except Exception:
                    pass
        else:
            RECORDER.call("end run", mlflow.end_run, "FINISHED" if ok else "FAILED")
        _LAST_OUTBOX = RECORDER.finish(ok)


_LAST_OUTBOX: Path | None = None


def last_outbox() -> Path | None:
    """The outbox of the last `recorded_run` if its tracking failed (sync it with `faceattr sync`)."""
    return _LAST_OUTBOX


def log_params(params: dict) -> None:
    params = {k: str(v) for k, v in params.items()}
    RECORDER.write({"op": "params", "params": params})
    RECORDER.call("log params", mlflow.log_params, params)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    metrics = {k: float(v) for k, v in metrics.items()}
    stamp = int(time.time() * 1000)
    RECORDER.write({"op": "metrics", "metrics": metrics, "step": step, "timestamp": stamp})
    RECORDER.call("log metrics", mlflow.log_metrics, metrics, step=step, timestamp=stamp)


def set_tags(tags: dict) -> None:
    tags = {k: str(v) for k, v in tags.items()}
    RECORDER.write({"op": "tags", "tags": tags})
    RECORDER.call("set tags", mlflow.set_tags, tags)


def register_model(model_uri: str | None, name: str):
    """A new version of registered model `name` (None when offline: `faceattr sync` registers it)."""
    RECORDER.write({"op": "register", "name": name})
    if model_uri is None:
        return None
    return RECORDER.call("register model", mlflow.register_model, model_uri, name)


def run_tags(config: dict, data: Data) -> dict[str, str]:
    """Tags that say what ran, the same names on every run."""
    return {"faceattr.experiment": config["name"], "faceattr.data": data.name,
            "faceattr.widths": models.widths(config), "faceattr.seed": str(config["train"]["seed"])}


def log_config(config: dict) -> None:
    """Every key of the resolved config as a dotted param (`train.epochs`).

    `mlflow run` has already logged each `-P` value; a `-P model.dense_0=64` names a config key, so
    that key is skipped here (it holds the same value) rather than logged twice, which MLflow refuses.
    """
    run = mlflow.active_run()
    found = RECORDER.call("get run", mlflow.get_run, run.info.run_id) if run else None
    logged = found.data.params if found else {}
    log_params({k: str(v) for k, v in config_module.flatten(config).items() if k not in logged})


def log_data(data: Data) -> None:
    """The data set as an MLflow input (name, digest, size) and its split sizes as params."""
    table = data.frame.drop(columns=["path"]).assign(path=[Path(p).name for p in data.frame["path"]])
    with warnings.catch_warnings():  # schema-inference hints about this table are not the user's concern
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(table, source=data.source, name=data.name)
    RECORDER.call("log input", _log_input, dataset)
    counts = data.frame["split"].value_counts()
    log_params({"data.name": data.name, "data.digest": data.digest, "data.rows": len(data.frame),
                       **{f"data.n_{s}": int(counts.get(s, 0)) for s in ("train", "val", "test")}})


def _log_input(dataset) -> None:
    """mlflow.log_input, retried once: MLflow inserts a new data set with check-then-insert, so two
    processes logging the same one at once (tuning workers) can lose the race with a UNIQUE
    violation; on the retry the data set exists and is only linked to the run."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context="training")
    except MlflowException as exc:
        if "UNIQUE" not in str(exc) and "duplicate key" not in str(exc):
            raise
        time.sleep(0.5)
        mlflow.log_input(dataset, context="training")


class EpochMetrics(keras.callbacks.Callback):
    """Logs `loss`, `val_loss`, `lr` (and `epoch_accuracy`, `epoch_val_accuracy`) with step=epoch.

    Accuracy is renamed so the per-epoch series never mixes with the final `val_accuracy`.
    """

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        metrics = {"loss": logs["loss"], "val_loss": logs.get("val_loss", float("nan")),
                   "lr": keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)}
        metrics.update({f"epoch_{k}": v for k, v in logs.items() if "accuracy" in k})
        log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)


def log_results(metrics: dict[str, float], tags: dict[str, str], first_outputs: list[float]) -> None:
    log_metrics(metrics)
    set_tags(tags)
    content = {"first_training_outputs": first_outputs}
    if RECORDER.active:
        RECORDER.artifact_path("collapse_check.json").write_text(json.dumps(content, indent=2))
    RECORDER.call("log artifact", mlflow.log_dict, content, "collapse_check.json")


def log_plots(history: dict, y_true: np.ndarray, y_pred: np.ndarray, target: str) -> None:
    """Learning curves and predicted-vs-true on validation, as PNG artifacts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("loss", "val_loss"):
        ax.plot(history.get(key, []), label=key)
    ax.set(xlabel="epoch", ylabel="loss", title="learning curves")
    ax.legend()
    _log_figure(fig, "plots/learning_curves.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    jitter = np.random.default_rng(0).normal(0, 0.015, len(y_true))
    ax.scatter(y_true + jitter, y_pred, s=6, alpha=0.5)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title="validation: predicted vs true",
           xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
    _log_figure(fig, "plots/predicted_vs_true.png")
    plt.close(fig)


def _log_figure(fig, path: str) -> None:
    if RECORDER.active:
        fig.savefig(RECORDER.artifact_path(path))
    RECORDER.call("log artifact", mlflow.log_figure, fig, path)
