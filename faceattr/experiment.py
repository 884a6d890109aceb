"""One experiment run, start to end: data -> model -> fit -> evaluation -> MLflow. The CLI and tuner call this."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import psutil

from faceattr import evaluate, models, names, plots, registry, serving, tasks, tracking, views
from faceattr.data import faces
from faceattr.data.loading import Data, Split, crops_made_by, make_split, open_data
from faceattr.data.regions import load_rgb
from faceattr.data.tfdata import model_inputs
from faceattr.errors import ConfigError, DataError
from faceattr.gender_input import gender_inputs
from faceattr.train import fit, release_fit_memory, scores as train_scores

SPLITS = ("train", "val", "test")
CROP_CHECK_PHOTOS = 4   # photos in plots/crop_check.png: enough to see a mismatch, cheap to detect


@dataclass
class Prepared:
    """Everything a fit needs, computed once (a tuning search reuses it for every trial)."""
    config: dict
    data: Data
    splits: dict[str, Split]
    gender_source: str
    gender_model: keras.Model | None
    left_out: list = field(default_factory=list)   # photos left out: no usable face for the face descriptor
    crop_check: list = field(default_factory=list)  # a few photos' training crops beside their served cut


@dataclass
class Assessment:
    metrics: dict[str, float]
    tags: dict[str, str]
    first_outputs: list[float]     # the first training photos' scores (the seeds' collapse print)
    scores: dict[str, np.ndarray]  # each judged split's scores ({"val": .., "test": ..})
    served: dict                   # settings chosen on validation, kept in the served model's spec
    by_split: dict[str, list[str]] = field(default_factory=dict)   # each judged split's metric names


@dataclass
class Outcome:
    model: keras.Model
    metrics: dict[str, float]
    tags: dict[str, str]
    model_uri: str | None
    served: dict = field(default_factory=dict)   # settings chosen on validation (identity: threshold)
    version: str | None = None     # the registered model version, when `train(register=True)`
    not_registered: str = ""       # why a model that was to be registered was not (too few photos)
    outbox: object = None          # tracking failed: the local outbox holding the run (`faceattr sync`)
    slices: list = field(default_factory=list)   # the slices.json rows (views.show)


def gather(config: dict) -> Prepared:
    """Load and validate the data (errors before any compute), pick the gender input, split."""
    task = tasks.of(config)
    data = open_data(config, task)
    for column in config["evaluation"]["slices"]:   # before any descriptor or model is computed
        if column not in data.frame:
            raise ConfigError(f"evaluation.slices.{column}: the data set {data.name} has no column {column!r} "
                              f"(it has {', '.join(c for c in data.frame.columns if not c.endswith('_box'))})")
    kind = models.input_kind(config)
    data, computed, left_out = kind.of_data(data, config["region"])   # the inputs beyond the crops the kind computed
    left_out = [*data.left_out, *left_out]   # whole photos without a clear subject, then faces dlib could not read
    gender, source, gender_model = gender_inputs(config, data, _gender_champion)
    labels = task.labels(data.frame, config)
    splits = {name: make_split(data, name, labels, gender, computed, kind.name) for name in SPLITS}
    return Prepared(config, data, splits, source, gender_model, left_out, crop_check(data, config["region"]))


def _gender_champion(name: str):
    """The champion of the registered gender model `name`: (its version, its served model), or None."""
    version = registry.champion(name)
    return None if version is None else (version, serving.load(f"models:/{name}@{registry.CHAMPION}"))


class Timings:
    """Seconds each stage of a run took, logged as the run's `time_<stage>` metrics: where a run's own
    cost goes besides the fit (benchmarks/run_cost.py reads them)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {f"time_{k}": v for k, v in self.seconds.items()}


def train(config: dict, register: bool = True, few_photos: bool = False) -> Outcome:
    """`faceattr train NAME`: one tracked run in the MLflow experiment named after the config.

    register: the logged model becomes a new version of the registered model named after the
    experiment (what `faceattr promote NAME` judges), if it trained on at least `data.min_photos`
    photos or `few_photos` says to register it anyway; otherwise `Outcome.not_registered` says why not
    (also the run's tag `faceattr.not_registered`).
    """
    timings = Timings()
    timings.seconds["startup"] = time.time() - psutil.Process().create_time()   # imports, config: before the run
    with timings.stage("data"):
        prepared = gather(config)
    tracking.use_experiment(config["name"])
    run_name = f"{config['name']}-{models.widths(config)}-s{config['train']['seed']}"
    photos, least = len(prepared.data.frame), config["data"]["min_photos"]
    with tracking.recorded_run(config["name"], run_name, tags=tracking.run_tags(config, prepared.data)) as run:
        outcome = fit_and_log(prepared, run, timings=timings)
        if register and photos < least and not few_photos:
            outcome.not_registered = (f"not registered as {config['name']!r}: trained on {photos} photos, fewer "
                                      f"than data.min_photos={least} (--register-few-photos registers it)")
            run.set_tags({names.NOT_REGISTERED: outcome.not_registered})
        elif register:
            with timings.stage("registration"):
                registered = run.register_model(outcome.model_uri, config["name"])
            outcome.version = registered.version if registered else None
        run.log_metrics(timings.metrics())
    outcome.outbox = run.outbox
    return outcome


def fit_and_log(prepared: Prepared, run: tracking.Run, model: keras.Model | None = None, callbacks=(),
                log_model: bool = True, initial_epoch: int = 0, timings: Timings | None = None) -> Outcome:
    """Into `run` (the active one): log params and data, fit, evaluate, log plots, the model, and the
    metrics linked to it and to each split's data set."""
    config, splits = prepared.config, prepared.splits
    task = tasks.of(config)
    timings = timings or Timings()
    with timings.stage("logging"):
        tracking.log_config(run, config)
        tracking.log_data(run, prepared.data)
    grouping = evaluate.baseline_grouping(splits["train"].frame.get("gender", []), splits["val"].frame.get("gender", []))
    keras.utils.set_random_seed(config["train"]["seed"])
    model = model if model is not None else models.build(config)
    params = {names.GENDER_SOURCE: prepared.gender_source, "baseline_grouping": grouping, "model.parameters": model.count_params()}
    if prepared.left_out:   # photos without a usable face (face-descriptor backbones): counted, listed
        params["data.left_out"] = len(prepared.left_out)
        run.log_dict({"left_out": prepared.left_out}, "data/left_out.json")
    if task.balances_classes:   # how the class imbalance is handled (train.balance) and the weights
        weights = task.class_weights(config, splits["train"].labels)
        params["class_weights"] = "none" if weights is None else " ".join(f"{k}:{v:.4g}" for k, v in weights.items())
    params["model.trainable_parameters"] = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    run.log_params(params)   # through the outbox, like every other param
    with timings.stage("fit"):
        history = fit(model, config, splits["train"], splits["val"],
                      callbacks=[run.epoch_metrics(), *callbacks], initial_epoch=initial_epoch)
        release_fit_memory(model)
    with timings.stage("evaluation"):
        assessed = assess(model, config, splits)
    metrics, tags = assessed.metrics, assessed.tags
    metrics["epochs_trained"] = len(history.history["loss"])
    def draw():
        with timings.stage("views"):
            drawn = views.show(run, model, config, splits, assessed.scores, history.history, assessed.served)
            if prepared.crop_check:
                tracking.log_figures(run, {names.CROP_CHECK: plots.crop_check(prepared.crop_check, config["region"])})
            return drawn

    model_uri = model_id = None
    # The views are drawn while the model is logged: each is mostly one thread's work (matplotlib, saving
    # and uploading files), so together they use the cores the fit used (issue 22: a run's own cost).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="views") as pool:
        drawing = pool.submit(draw)
        if log_model:
            with timings.stage("model"):
                info = run.log_model(model, config, input_example(config, splits["val"]), prepared.gender_model,
                                     assessed.served, crops_made_by(prepared.data.frame))
            if info:   # None: tracking failed, the model is in the outbox
                model_uri, model_id = info.model_uri, info.model_id
        slices, shown, shown_tags = drawing.result()
    with timings.stage("logging"):   # after the model: MLflow 3 links the metrics to it and to each split
        tracking.log_results(run, metrics, tags, assessed.first_outputs, assessed.by_split, model_id)
    metrics.update(shown)
    tags.update(shown_tags)
    return Outcome(model, metrics, tags, model_uri, served=assessed.served, slices=slices)


def crop_check(data: Data, region: str, photos: int = CROP_CHECK_PHOTOS) -> list[tuple[str, np.ndarray, object]]:
    """A few validation photos: (file name, its training crops, the crops the served model cuts from the
    whole photo, detecting its face as the server does; or why there is none). Ready crops have no
    whole photo to cut: their training crops are shown alone."""
    frame = data.frame.reset_index(drop=True)
    rows = frame.index[frame["split"] == "val"] if (frame["split"] == "val").any() else frame.index
    out = []
    for path in list(dict.fromkeys(frame.loc[rows, "path"]))[:photos]:
        mine = frame.index[frame["path"] == path]
        trained, name = data.images[mine], Path(path).name
        if frame.loc[mine[0], "image_region"] != "photo":
            out.append((name, trained, "a ready crop: no whole photo to cut"))
            continue
        try:
            image = load_rgb(path)
            out.append((name, trained, faces.cut(image, region, faces.find_regions(image) if region != "photo" else {})))
        except DataError as exc:
            out.append((name, trained, f"served: {exc}"))
    return out


def scores(model: keras.Model, config: dict, split: Split) -> np.ndarray:
    """One number per photo of `split` (train.scores)."""
    return train_scores(model, config, model_inputs(split, tasks.of(config).reads_gender))


def assess(model: keras.Model, config: dict, splits: dict[str, Split]) -> Assessment:
    """Validation and test metrics (faceattr/evaluate.py) at the served settings the task chooses on
    validation (identity's threshold), the collapse check on validation, the first training outputs (as
    the seeds printed them) and the scores of each judged split ({"val": ..})."""
    task, threshold = tasks.of(config), config["evaluation"]["collapse_threshold"]
    train, val = splits["train"], splits["val"]
    first = scores(model, config, train.head(config["evaluation"]["first_outputs"]))
    found = {name: scores(model, config, splits[name]) for name in ("val", "test") if len(splits[name])}
    served = task.calibrate(found["val"], val)
    metrics: dict[str, float] = {f"served_{k}": v for k, v in served.items()}
    by_split = {}
    for name in found:
        judged = evaluate.evaluate(task, found[name], splits[name], train, threshold, served)
        collapsed, ratio = judged.pop(names.COLLAPSED), judged.pop("collapse_std_ratio")
        by_split[name] = [evaluate.metric_name(name, k) for k in judged]
        metrics.update({evaluate.metric_name(name, k): v for k, v in judged.items()})
        if name == "val":
            metrics["collapse_std_ratio"] = ratio
            tags = {names.COLLAPSED: str(collapsed).lower(), "collapse_threshold": str(threshold)}
    if config["evaluation"]["landmark_baseline"]:
        metrics.update(evaluate.landmark_baseline(task.target.column, splits))
        if trails := evaluate.trails_baseline(metrics):
            tags[names.TRAILS_BASELINE] = "; ".join(trails)
    if task.pooled_prefixes:  # figures over validation + test together (identity: seen/unseen people)
        pooled = Split.concat([splits[name] for name in found])
        judged = evaluate.evaluate(task, np.concatenate(list(found.values())), pooled, train, threshold, served)
        metrics.update({k: v for k, v in judged.items() if k.startswith(task.pooled_prefixes)})
    return Assessment(metrics, tags, [round(float(v), 4) for v in first], found, served, by_split)


def input_example(config: dict, split: Split):
    """One request row as a served model takes it: PNG bytes of what its input kind reads (a crop, a face at
    full resolution for a model reading face descriptors, a whole photo for one reading descriptors and HOG),
    and for regressions a gender."""
    pixels, sent_as = models.input_kind(config).example(split)
    row = {"image": serving.image_bytes(pixels), "kind": sent_as}
    if tasks.of(config).reads_gender:
        row["gender"] = "female"
    return pd.DataFrame([row])
