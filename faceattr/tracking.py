"""Everything faceattr writes to MLflow: params, per-epoch metrics, data set, plots and the model."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import keras
import mlflow
import numpy as np

from faceattr import config as config_module
from faceattr.data.loading import Data

PACKAGE_DIR = Path(__file__).resolve().parent
PINNED = ["mlflow==3.17.2", "tensorflow==2.21.0", "keras==3.15.1", "mtcnn==1.0.0", "numpy", "pandas", "pillow", "pyyaml"]


def use_experiment(name: str) -> None:
    """Log to the MLflow experiment named after ours, unless `mlflow run` or the user chose one."""
    chosen = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")
    if not any(os.environ.get(k) for k in chosen):
        mlflow.set_experiment(name)


def start_run(run_name: str, nested: bool = False, tags: dict | None = None):
    """Start (or, under `mlflow run`, resume) a run and name it; use as a context manager."""
    run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") and not nested else run_name,
                           nested=nested)
    mlflow.set_tags({"mlflow.runName": run_name, **(tags or {})})
    return run


def run_tags(config: dict, data: Data) -> dict[str, str]:
    """Tags that say what ran, the same names on every run."""
    return {"faceattr.experiment": config["name"], "faceattr.data": data.name,
            "faceattr.widths": config_module.widths(config), "faceattr.seed": str(config["train"]["seed"])}


def log_config(config: dict) -> None:
    """Every key of the resolved config as a dotted param (`train.epochs`).

    `mlflow run` has already logged each `-P` value; a `-P model.dense_0=64` names a config key, so
    that key is skipped here (it holds the same value) rather than logged twice, which MLflow refuses.
    """
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: str(v) for k, v in config_module.flatten(config).items() if k not in logged})


def log_data(data: Data) -> None:
    """The data set as an MLflow input (name, digest, size) and its split sizes as params."""
    table = data.frame.drop(columns=["path"]).assign(path=[Path(p).name for p in data.frame["path"]])
    with warnings.catch_warnings():  # schema-inference hints about this table are not the user's concern
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(table, source=data.source, name=data.name)
    mlflow.log_input(dataset, context="training")
    counts = data.frame["split"].value_counts()
    mlflow.log_params({"data.name": data.name, "data.digest": data.digest, "data.rows": len(data.frame),
                       **{f"data.n_{s}": int(counts.get(s, 0)) for s in ("train", "val", "test")}})


class EpochMetrics(keras.callbacks.Callback):
    """Logs `loss`, `val_loss`, `lr` (and `epoch_accuracy`, `epoch_val_accuracy`) with step=epoch.

    Accuracy is renamed so the per-epoch series never mixes with the final `val_accuracy`.
    """

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        metrics = {"loss": logs["loss"], "val_loss": logs.get("val_loss", float("nan")),
                   "lr": keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)}
        metrics.update({f"epoch_{k}": v for k, v in logs.items() if "accuracy" in k})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)


def log_results(metrics: dict[str, float], tags: dict[str, str], first_outputs: list[float]) -> None:
    mlflow.log_metrics(metrics)
    mlflow.set_tags(tags)
    mlflow.log_dict({"first_training_outputs": first_outputs}, "collapse_check.json")


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
    mlflow.log_figure(fig, "plots/learning_curves.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    jitter = np.random.default_rng(0).normal(0, 0.015, len(y_true))
    ax.scatter(y_true + jitter, y_pred, s=6, alpha=0.5)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title="validation: predicted vs true",
           xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
    mlflow.log_figure(fig, "plots/predicted_vs_true.png")
    plt.close(fig)


def log_model(model: keras.Model, config: dict, input_example, gender_model: keras.Model | None = None,
              registered_model_name: str | None = None):
    """Log the photo-taking pyfunc (see serving.py) carrying the Keras model(s) and faceattr's code.

    A pyfunc rather than `mlflow.keras.log_model`: it takes photos, and the keras flavour crashes
    when given an input example (MLflow issue #16183).
    """
    from faceattr.serving import FaceattrModel, signature

    spec = {"name": config["name"], "task": config["task"], "target": config["target"],
            "region": config["region"], "gender_model": gender_model is not None}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"keras_model": str(Path(tmp, "model.keras")), "spec": str(Path(tmp, "spec.json"))}
        model.save(artifacts["keras_model"])
        Path(artifacts["spec"]).write_text(json.dumps(spec))
        if gender_model is not None:
            artifacts["gender_model"] = str(Path(tmp, "gender_model.keras"))
            gender_model.save(artifacts["gender_model"])
        return mlflow.pyfunc.log_model(
            name="model", python_model=FaceattrModel(), artifacts=artifacts, code_paths=[str(PACKAGE_DIR)],
            signature=signature(config["task"], config["target"]), input_example=input_example,
            pip_requirements=PINNED, registered_model_name=registered_model_name)
