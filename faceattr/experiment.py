"""One experiment run, start to end: data -> model -> fit -> evaluation -> MLflow. The CLI and tuner call this."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from faceattr import config as config_module
from faceattr import evaluate, models, tracking
from faceattr.data.loading import Data, make_split, open_data
from faceattr.data.pipeline import Split, model_inputs
from faceattr.gender_input import gender_inputs
from faceattr.serving import encode_image
from faceattr.train import class_weights, fit

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Everything a fit needs, computed once (a tuning search reuses it for every trial)."""
    config: dict
    data: Data
    splits: dict[str, Split]
    gender_source: str
    gender_model: keras.Model | None


@dataclass
class Outcome:
    model: keras.Model
    metrics: dict[str, float]
    tags: dict[str, str]
    model_uri: str | None
    version: str | None = None     # the registered model version, when `train(register=True)`
    outbox: object = None          # tracking failed: the local outbox holding the run (`faceattr sync`)


def prepare(config: dict) -> Prepared:
    """Load and validate the data (errors before any compute), pick the gender input, split."""
    data = open_data(config)
    gender, source, gender_model = gender_inputs(config, data)
    splits = {name: make_split(data, name, config, gender) for name in SPLITS}
    return Prepared(config, data, splits, source, gender_model)


def train(config: dict, register: bool = True) -> Outcome:
    """`faceattr train NAME`: one tracked run in the MLflow experiment named after the config.

    register: the logged model becomes a new version of the registered model named after the
    experiment (what `faceattr promote NAME` judges).
    """
    prepared = prepare(config)
    tracking.use_experiment(config["name"])
    run_name = f"{config['name']}-{config_module.widths(config)}-s{config['train']['seed']}"
    with tracking.recorded_run(config["name"], run_name, tags=tracking.run_tags(config, prepared.data)):
        outcome = fit_and_log(prepared)
        if register:
            registered = tracking.register_model(outcome.model_uri, config["name"])
            outcome.version = registered.version if registered else None
    outcome.outbox = tracking.last_outbox()
    return outcome


def fit_and_log(prepared: Prepared, model: keras.Model | None = None, callbacks=(),
                log_model: bool = True, initial_epoch: int = 0) -> Outcome:
    """Inside an active run: log params and data, fit, evaluate, log metrics, plots and the model."""
    config, splits = prepared.config, prepared.splits
    tracking.log_config(config)
    tracking.log_data(prepared.data)
    kind = evaluate.baseline_kind(splits["train"].frame.get("gender", []), splits["val"].frame.get("gender", []))
    keras.utils.set_random_seed(config["train"]["seed"])
    model = model if model is not None else models.build(config)
    params = {"gender_source": prepared.gender_source, "baseline_kind": kind, "model.parameters": model.count_params()}
    if config["task"] == "identity":  # how the class imbalance is handled (train.balance) and the weights
        weights = class_weights(config, splits["train"])
        params["class_weights"] = "none" if weights is None else " ".join(f"{k}:{v:.4g}" for k, v in weights.items())
        params["model.trainable_parameters"] = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    tracking.log_params(params)   # through the outbox, like every other param
    history = fit(model, config, splits["train"], splits["val"],
                  callbacks=[tracking.EpochMetrics(), *callbacks], initial_epoch=initial_epoch)
    metrics, tags, first_outputs, val_pred = assess(model, config, splits)
    metrics["epochs_trained"] = len(history.history["loss"])
    tracking.log_results(metrics, tags, first_outputs)
    if config["task"] == "regression":
        tracking.log_plots(history.history, splits["val"].labels, val_pred, config["target"])
    model_uri = None
    if log_model:
        info = tracking.log_model(model, config, input_example(config, splits["val"]), prepared.gender_model)
        model_uri = info.model_uri if info else None   # None: tracking failed, the model is in the outbox
    return Outcome(model, metrics, tags, model_uri)


def predict(model: keras.Model, config: dict, split: Split) -> np.ndarray:
    with_gender = config["task"] == "regression"
    out = model.predict(model_inputs(split, with_gender), batch_size=256, verbose=0)
    return models.to_unit_range(out) if with_gender else out


def assess(model: keras.Model, config: dict, splits: dict[str, Split]):
    """Validation and test metrics, the collapse check, the first training outputs (as the seeds printed)."""
    threshold = config["evaluation"]["collapse_threshold"]
    train, val = splits["train"], splits["val"]
    first = predict(model, config, _head(train, config["evaluation"]["first_outputs"]))
    val_pred = predict(model, config, val)
    metrics: dict[str, float] = {}
    held_out = []  # identity: val + test together give the headline seen_/unseen_accuracy
    for name, split in (("val", val), ("test", splits["test"])):
        if len(split) == 0:
            continue
        pred = val_pred if name == "val" else predict(model, config, split)
        if config["task"] == "regression":
            found = evaluate.regression_metrics(pred, split.labels, split.frame.get("gender", [None] * len(split)),
                                                train.labels, train.frame.get("gender", [None] * len(train)))
        elif config["task"] == "identity":
            found = evaluate.identity_metrics(pred, split.labels, split.frame["group"])
            held_out.append((pred.reshape(-1), split.labels, split.frame["group"].to_numpy()))
        else:
            found = evaluate.classification_metrics(pred, split.labels)
        metrics.update({_metric_name(name, k): v for k, v in found.items()})
    if held_out:
        together = evaluate.identity_metrics(*(np.concatenate(parts) for parts in zip(*held_out)))
        metrics.update({k: v for k, v in together.items() if k.startswith(("seen_", "unseen_"))})
    if config["task"] == "identity":
        ratio, collapsed = evaluate.collapse_check(val_pred.reshape(-1), val.labels, threshold)
        first_outputs = [round(float(v), 4) for v in first.reshape(-1)]
    elif config["task"] == "regression":
        ratio, collapsed = evaluate.collapse_check(val_pred, val.labels, threshold)
        first_outputs = [round(float(v), 4) for v in first]
    else:
        ratio, collapsed = evaluate.collapse_check(val_pred[:, 1], val.labels[:, 1], threshold)
        first_outputs = [round(float(v), 4) for v in first[:, 1]]
    metrics["collapse_std_ratio"] = ratio
    tags = {"collapsed": str(collapsed).lower(), "collapse_threshold": str(threshold)}
    return metrics, tags, first_outputs, val_pred


def input_example(config: dict, split: Split):
    """One request row as a served model takes it: a base64 PNG crop (and, for regressions, a gender)."""
    import pandas as pd

    row = {"image": encode_image(split.images[0]), "kind": "crop"}
    if config["task"] == "regression":
        row["gender"] = "female"
    return pd.DataFrame([row])


def _metric_name(split: str, key: str) -> str:
    """Validation figures keep the seeds' names (val_mse, baseline_ratio); test ones are all test_*."""
    if split == "test":
        return f"test_{key}"
    return key if key.startswith("baseline") else f"val_{key}"


def _head(split: Split, n: int) -> Split:
    return Split(split.images[:n], split.gender[:n], split.labels[:n], split.frame.iloc[:n])
