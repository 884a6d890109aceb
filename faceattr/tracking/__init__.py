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
import tempfile
import time
import warnings
from pathlib import Path

import keras
import mlflow
from mlflow.entities import RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from faceattr import config as config_module
from faceattr import models, names
from faceattr.data.loading import SYNTHETIC_SETTINGS, Data
from faceattr.tracking import packaging
from faceattr.tracking.outbox import Recorder, remote_tracking



# The MLflow input context of each split's data set; evaluation metrics of a split are linked to it.
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
EXPERIMENT_WE_SET = "FACEATTR_EXPERIMENT_ID"   # the experiment id `use_experiment` set in this process
# MLflow's own tags, for the modules that do not import mlflow (report)
RUN_NAME, PARENT = MLFLOW_RUN_NAME, MLFLOW_PARENT_RUN_ID


def use_experiment(name: str) -> None:
    """Log to the MLflow experiment named after ours, unless `mlflow run` or the user chose one.

    `mlflow.set_experiment` itself exports MLFLOW_EXPERIMENT_ID, so the id we set last (remembered
    beside it in the environment) is not taken for the user's choice (else a second experiment in
    one process would log into the first).
    """
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    chosen = (os.environ.get("MLFLOW_RUN_ID") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
              or (env_id and env_id != os.environ.get(EXPERIMENT_WE_SET)))
    if not chosen:
        os.environ[EXPERIMENT_WE_SET] = mlflow.set_experiment(name).experiment_id


class Run:
    """One MLflow run being written: every write goes through its methods. With a journal (`recorded_run`
    against a remote server) each write is also kept in the local outbox, and after the first failed
    call only kept there; `outbox` then names the folder `faceattr sync` uploads."""

    def __init__(self, run_id: str, experiment_id: str, recorder: Recorder | None = None):
        self.run_id, self.experiment_id = run_id, experiment_id
        self.recorder = recorder or Recorder()
        self.outbox: Path | None = None
        self.datasets: dict = {}   # split -> the MLflow data set logged as its input (log_data)

    def log_params(self, params: dict) -> None:
        params = {k: str(v) for k, v in params.items()}
        self.recorder.write({"op": "params", "params": params})
        self.recorder.call("log params", mlflow.log_params, params, run_id=self.run_id)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None,
                    split: str | None = None) -> None:
        """`model_id`, `split`: MLflow 3 links the metrics to that logged model and to the split's data
        set (log_data), so the model's page compares models per split. The outbox keeps them unlinked:
        `faceattr sync` logs a new model."""
        metrics = {k: float(v) for k, v in metrics.items()}
        stamp = int(time.time() * 1000)
        self.recorder.write({"op": "metrics", "metrics": metrics, "step": step, "timestamp": stamp})
        self.recorder.call("log metrics", mlflow.log_metrics, metrics, step=step, timestamp=stamp, run_id=self.run_id,
                           model_id=model_id, dataset=self.datasets.get(split))

    def set_tags(self, tags: dict) -> None:
        tags = {k: str(v) for k, v in tags.items()}
        self.recorder.write({"op": "tags", "tags": tags})
        self.recorder.call("set tags", mlflow.MlflowClient().log_batch, self.run_id,
                           tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.recorder.call("log artifact", mlflow.MlflowClient().log_artifact, self.run_id, str(path), artifact_path)

    def log_dict(self, content: dict, path: str) -> None:
        if self.recorder.active:
            self.recorder.artifact_path(path).write_text(json.dumps(content, indent=2))
        self.recorder.call("log artifact", mlflow.MlflowClient().log_dict, self.run_id, content, path)

    def log_text(self, text: str, path: str) -> None:
        if self.recorder.active:
            self.recorder.artifact_path(path).write_text(text)
        self.recorder.call("log artifact", mlflow.MlflowClient().log_text, self.run_id, text, path)

    def log_figure(self, fig, path: str) -> None:
        if self.recorder.active:
            fig.savefig(self.recorder.artifact_path(path))
        self.recorder.call("log artifact", mlflow.MlflowClient().log_figure, self.run_id, fig, path)

    def log_table(self, table, path: str) -> None:
        if self.recorder.active:
            self.recorder.artifact_path(path).write_text(table.to_json(orient="split", index=False))
        self.recorder.call("log artifact", mlflow.MlflowClient().log_table, self.run_id, table, path)

    def log_model(self, model: keras.Model, config: dict, input_example, gender_model: keras.Model | None = None,
                  served: dict | None = None, made_by: str | None = None):
        """The served model (tracking/packaging.py); None when tracking failed (it is kept in the outbox)."""
        return packaging.log_model(self.recorder, model, config, input_example, gender_model, served, made_by)

    def log_bundle(self, members: list[dict], input_example):
        """A bundle of registered models' versions (tracking/packaging.log_bundle)."""
        return packaging.log_bundle(members, input_example)

    def register_model(self, model_uri: str | None, name: str):
        """A new version of registered model `name` (None when offline: `faceattr sync` registers it)."""
        self.recorder.write({"op": "register", "name": name})
        if model_uri is None:
            return None
        return self.recorder.call("register model", mlflow.register_model, model_uri, name)

    def epoch_metrics(self) -> keras.callbacks.Callback:
        return EpochMetrics(self)


def _own_name(run_name: str, nested: bool = False) -> str | None:
    """The name to start a run with: none when `mlflow run` made it (MLFLOW_RUN_ID is resumed, and a
    name would clash with its own); the tag `mlflow.runName` names it either way."""
    return None if os.environ.get("MLFLOW_RUN_ID") and not nested else run_name


KILLED = "KILLED"   # the status of a run a person stopped (Ctrl-C): what it logged is kept


@contextlib.contextmanager
def start_run(run_name: str, nested: bool = False, tags: dict | None = None, parent_run_id: str | None = None,
              experiment_id: str | None = None):
    """Start (or, under `mlflow run`, resume) a run and name it; yields its `Run`.
    `nested` runs are children of the active run or of `parent_run_id` (tuning's trials).
    Every run trains: MLflow samples its CPU and memory (system metrics; psutil). A run stopped by Ctrl-C
    keeps what it logged and ends KILLED, not FAILED (a report tells it from a run that failed)."""
    with mlflow.start_run(run_name=_own_name(run_name, nested), nested=nested, parent_run_id=parent_run_id,
                          experiment_id=experiment_id, log_system_metrics=True) as active:
        mlflow.set_tags({MLFLOW_RUN_NAME: run_name, **(tags or {})})
        try:
            yield Run(active.info.run_id, active.info.experiment_id)
        except KeyboardInterrupt:
            mlflow.end_run(KILLED)
            raise


@contextlib.contextmanager
def recorded_run(experiment: str, run_name: str, tags: dict | None = None):
    """`start_run` for `faceattr train`: with a remote tracking URI, through the outbox (outbox.py).

    Yields the `Run`; after the block its `outbox` is the folder holding the run when tracking failed
    on the way (else None).
    """
    if not remote_tracking():
        with start_run(run_name, tags=tags) as run:
            yield run
        return
    recorder = Recorder()
    recorder.begin(experiment, run_name, tags or {})
    active = recorder.call("start run", mlflow.start_run, run_name=_own_name(run_name), log_system_metrics=True)
    if active is not None:
        recorder.call("set tags", mlflow.set_tags, {MLFLOW_RUN_NAME: run_name, **(tags or {})})
    run = Run(active.info.run_id if active else "", active.info.experiment_id if active else "", recorder)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = KILLED
        raise
    finally:
        if recorder.failed:
            while mlflow.active_run():   # pops the run even when the server cannot be told
                try:
                    mlflow.end_run(status)
                except Exception:
                    pass
        else:
            recorder.call("end run", mlflow.end_run, status)
        ok = status == "FINISHED"
        run.outbox = recorder.finish(ok)


def system_metrics_node(node_id: str) -> None:
    """Name this process's system metrics (`system/<node_id>/cpu_utilization_percentage`), so the
    workers of one distributed search are told apart."""
    mlflow.system_metrics.set_system_metrics_node_id(node_id)


def get_run(run_id: str):
    """The run with its params, metrics and tags (a read: never through the outbox)."""
    return mlflow.MlflowClient().get_run(run_id)


def find_runs(experiment_id: str, query: str) -> list:
    """Runs of `experiment_id` matching the MLflow search `query`, oldest first."""
    return mlflow.search_runs([experiment_id], query, output_format="list", max_results=50000,
                              order_by=["attributes.start_time ASC"])


def find_experiment(name: str) -> str | None:
    """The id of the MLflow experiment called `name`, or None when there is none."""
    found = mlflow.MlflowClient().get_experiment_by_name(name)
    return found.experiment_id if found else None


def ensure_experiment(name: str) -> str:
    """The id of the experiment `name`, created when missing; the active experiment is left as it is."""
    return find_experiment(name) or mlflow.MlflowClient().create_experiment(name)


def experiment_names() -> list[str]:
    """The names of every MLflow experiment in the tracking store (for an error that lists them)."""
    return sorted(e.name for e in mlflow.search_experiments())


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every value of metric `key` logged in a run, by step (per-epoch losses)."""
    return sorted((m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run_id, key))


def read_artifact(run_id: str, path: str) -> bytes | None:
    """The bytes of artifact `path` of a run, or None when the run has no such artifact."""
    client = mlflow.MlflowClient()
    folder = path.rpartition("/")[0] or None
    if path not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def set_terminated(run_id: str, status: str) -> None:
    """End a run other than the active one (KILLED: one a killed earlier attempt left RUNNING)."""
    mlflow.MlflowClient().set_terminated(run_id, status)


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
        tags = {MLFLOW_RUN_NAME: self.run_name, **self.tags}
        if parent:
            tags[names.LAUNCHED_BY] = parent
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


def run_tags(config: dict, data: Data) -> dict[str, str]:
    """Tags that say what ran, the same names on every run."""
    return {names.EXPERIMENT: config["name"], names.DATA: data.name,
            names.WIDTHS: models.widths(config), names.SEED: str(config["train"]["seed"])}


def log_config(run: Run, config: dict) -> None:
    """The validated config whole as the artifact config.json (what promotion and the report read back:
    `run_config`), and every key as a dotted param (`train.epochs`) to search and compare runs by.

    `mlflow run` has already logged each `-P` value; a `-P model.dense_0=64` names a config key, so
    that key is skipped here (it holds the same value) rather than logged twice, which MLflow refuses.
    """
    found = run.recorder.call("get run", mlflow.get_run, run.run_id) if run.run_id else None
    logged = set(found.data.params if found else {})
    if config["data"]["source"] != "synthetic":   # what a run logs is what it used
        logged |= set(SYNTHETIC_SETTINGS)
    run.log_params({k: str(v) for k, v in config_module.flatten(config).items() if k not in logged})
    run.log_dict(config, names.CONFIG)


def run_config(run) -> dict:
    """The validated config an MLflow run (a search result or `get_run`'s) was trained with: its
    config.json; for a run logged before runs carried one, rebuilt from its params
    (config.from_params): the one place such older runs are read."""
    found = read_artifact(run.info.run_id, names.CONFIG)
    if found is not None:
        return json.loads(found)
    return config_module.from_params(run.data.params, source=f"run {run.info.run_id}'s params")


def log_data(run: Run, data: Data) -> None:
    """Each split's rows as an MLflow input of the run (context training, validation or test; kept in
    `run.datasets` for the metrics linked to it) and the data set's name, digest and split sizes as params."""
    table = data.frame.drop(columns=["path"]).assign(path=[Path(p).name for p in data.frame["path"]])
    for split, context in SPLIT_CONTEXTS.items():
        with warnings.catch_warnings():  # schema-inference hints about this table are not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(table[table["split"] == split], source=data.source,
                                              name=f"{data.name}-{split}")
        run.recorder.call("log input", _log_input, dataset, context)   # into the active run: `run`
        run.datasets[split] = dataset
    counts = data.frame["split"].value_counts()
    run.log_params({"data.name": data.name, "data.digest": data.digest, "data.rows": len(data.frame),
                    **{f"data.n_{s}": int(counts.get(s, 0)) for s in ("train", "val", "test")}})


def _log_input(dataset, context: str) -> None:
    """mlflow.log_input, retried once: MLflow inserts a new data set with check-then-insert, so two
    processes logging the same one at once (tuning workers) can lose the race with a UNIQUE
    violation; on the retry the data set exists and is only linked to the run."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context=context)
    except MlflowException as exc:
        if "UNIQUE" not in str(exc) and "duplicate key" not in str(exc):
            raise
        time.sleep(0.5)
        mlflow.log_input(dataset, context=context)


class EpochMetrics(keras.callbacks.Callback):
    """Logs `loss`, `val_loss`, `lr` (and `epoch_accuracy`, `epoch_val_accuracy`) with step=epoch.

    Accuracy is renamed so the per-epoch series never mixes with the final `val_accuracy`.
    """

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        metrics = {"loss": logs["loss"], "val_loss": logs.get("val_loss", float("nan")),
                   "lr": keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)}
        metrics.update({f"epoch_{k}": v for k, v in logs.items() if "accuracy" in k})
        self.run.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)


def log_results(run: Run, metrics: dict[str, float], tags: dict[str, str], first_outputs: list[float],
                by_split: dict[str, list[str]] | None = None, model_id: str | None = None) -> None:
    """The evaluation's metrics, tags and collapse check. `by_split` ({"val": [metric names], ..}): those
    metrics are linked to the split's data set; all are linked to the logged model `model_id`, if any."""
    by_split = by_split or {}
    for split, keys in by_split.items():
        run.log_metrics({k: metrics[k] for k in keys}, model_id=model_id, split=split)
    linked = {k for keys in by_split.values() for k in keys}
    run.log_metrics({k: v for k, v in metrics.items() if k not in linked}, model_id=model_id)
    run.set_tags(tags)
    run.log_dict({"first_training_outputs": first_outputs}, names.COLLAPSE_CHECK)


def log_figures(run: Run, figures: dict) -> None:
    """{artifact path: matplotlib Figure} (faceattr/plots.py) as PNG artifacts; each figure is closed."""
    import matplotlib.pyplot as plt

    for path, fig in figures.items():
        run.log_figure(fig, path)
        plt.close(fig)


def log_slices(run: Run, rows: list[dict], metrics: dict[str, float], path: str) -> None:
    """The per-slice table (evaluate.slice_table's rows) as the table artifact `path` (MLflow's
    log_table format: {"columns": [...], "data": [[...], ...]}) and its metrics."""
    import pandas as pd

    if rows:
        run.log_table(pd.DataFrame(rows), path)
    run.log_metrics(metrics)
