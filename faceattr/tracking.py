"""Everything faceattr writes to MLflow: params, per-epoch metrics, data set, plots and the model."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import tempfile
import warnings
from pathlib import Path

import keras
import mlflow
import numpy as np

from faceattr import config as config_module
from faceattr import models, tasks
from faceattr.data.loading import Data
from faceattr.outbox import RECORDER, remote_tracking

PACKAGE_DIR = Path(__file__).resolve().parent
PINNED = ["mlflow==3.17.2", "tensorflow==2.21.0", "keras==3.15.1", "mtcnn==1.0.0", "numpy", "pandas", "pillow", "pyyaml"]


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


def start_run(run_name: str, nested: bool = False, tags: dict | None = None):
    """Start (or, under `mlflow run`, resume) a run and name it; use as a context manager."""
    run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") and not nested else run_name,
                           nested=nested)
    mlflow.set_tags({"mlflow.runName": run_name, **(tags or {})})
    return run


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


def log_model(model: keras.Model, config: dict, input_example, gender_model: keras.Model | None = None,
              registered_model_name: str | None = None):
    """Log the photo-taking pyfunc (see serving.py) carrying the Keras model(s) and faceattr's code.

    A pyfunc rather than `mlflow.keras.log_model`: it takes photos, and the keras flavour crashes
    when given an input example (MLflow issue #16183).
    """
    spec = {"name": config["name"], "task": config["task"], "target": config["target"],
            "region": config["region"], "gender_model": gender_model is not None,
            **tasks.of(config).served_spec(config)}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"keras_model": str(Path(tmp, "model.keras")), "spec": str(Path(tmp, "spec.json"))}
        model.save(artifacts["keras_model"])
        Path(artifacts["spec"]).write_text(json.dumps(spec))
        if gender_model is not None:
            artifacts["gender_model"] = str(Path(tmp, "gender_model.keras"))
            gender_model.save(artifacts["gender_model"])
        if not RECORDER.active:
            return _log_pyfunc(artifacts, spec, input_example, registered_model_name)
        info = RECORDER.call("log model", _log_pyfunc, artifacts, spec, input_example, registered_model_name)
        if info is None:   # offline: keep what `faceattr sync` needs to log the same model
            keep = RECORDER.dir / "model"
            keep.mkdir(exist_ok=True)
            for path in artifacts.values():
                shutil.copy2(path, keep / Path(path).name)
            input_example.to_json(keep / "input_example.json", orient="split")
            print(f"faceattr: the trained model is kept in {keep}", file=sys.stderr)
        return info


def _log_pyfunc(artifacts: dict, spec: dict, input_example, registered_model_name: str | None = None):
    from faceattr.serving import FaceattrModel, signature

    return mlflow.pyfunc.log_model(
        name="model", python_model=FaceattrModel(), artifacts=artifacts, code_paths=[str(PACKAGE_DIR)],
        signature=signature(spec), input_example=input_example,
        pip_requirements=PINNED, registered_model_name=registered_model_name)


def log_saved_model(folder: Path):
    """Log a model that `log_model` kept in an outbox (`faceattr sync`), in the active run."""
    import pandas as pd

    folder = Path(folder)
    spec = json.loads((folder / "spec.json").read_text())
    artifacts = {"keras_model": str(folder / "model.keras"), "spec": str(folder / "spec.json")}
    if (folder / "gender_model.keras").is_file():
        artifacts["gender_model"] = str(folder / "gender_model.keras")
    example = pd.read_json(folder / "input_example.json", orient="split", dtype=False)
    return _log_pyfunc(artifacts, spec, example)
