"""Hyperparameter search: keras-tuner picks widths, dropout and learning rate; MLflow records every trial.

One parent run per search, one nested child run per trial (logged by `experiment.fit_and_log`, exactly
as `faceattr train` logs), then the best configuration retrained with several seeds; the median of
those is registered as a new version of the model named after the experiment.

The keras-tuner project directory holds the search state, so re-running the same command resumes it.
Distributed mode (KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT, see docs/tuning.md): the chief
only runs the oracle and owns the parent run; workers run trials as children of that parent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from faceattr import config as config_module
from faceattr import experiment, models, registry, tasks, tracking
from faceattr.data.cache import write_atomic
from faceattr.errors import ConfigError, FaceattrError
from faceattr.names import (COLLAPSED, MEDIAN_RUN, REGISTERED_VERSION, REPEAT, RESUMED_FROM, ROLE, SEARCH, SEARCH_ID,
                            SEED, TRIAL, TRIAL_ID, TUNER_ID, TUNING_DIR, WIDTHS)
from faceattr.names import ERROR as TRIAL_ERROR

TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVE = "val_loss"
# Added to a collapsed trial's val_loss so the oracle never prefers it. Finite on purpose: the
# Bayesian oracle maps +inf to 0, which would make a collapsed trial look like the best one.
COLLAPSE_PENALTY = 100.0
STATE_FILE = "faceattr_search.json"
PARENT_ENV = "FACEATTR_PARENT_RUN_ID"
# Tags (the same names on every run of a search): faceattr/names.py


class TuningError(FaceattrError):
    """The search could not produce a model (every trial failed or collapsed)."""


# ---------------------------------------------------------------- search space


def declare(hp: kt.HyperParameters, config: dict) -> None:
    """Declare the hyperparameters the experiment's `search:` section names (faceattr/models)."""
    models.declare(hp, config)


def apply(config: dict, values: dict[str, Any]) -> dict:
    """A copy of `config` with hyperparameter `values` (hp.values or best.* params) put in place."""
    return config_module.validate(models.apply(config, values), source="search")


def search_values(values: dict[str, Any]) -> dict[str, Any]:
    """The tuned values only, without keras-tuner's bookkeeping (`tuner/epochs`, ...)."""
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def hyperband_trials(max_epochs: int, factor: int = 3) -> int:
    """How many trials one Hyperband iteration runs, asked of keras-tuner's own oracle (its bracket
    sizes are not public; asking them keeps the count right for the pinned keras-tuner)."""
    oracle = kt.oracles.HyperbandOracle(objective=kt.Objective(OBJECTIVE, "min"), max_epochs=max_epochs,
                                        factor=factor)
    return sum(oracle._get_size(bracket, round_) for bracket in range(oracle._get_num_brackets())
               for round_ in range(bracket + 1))


def headline_metrics(config: dict) -> tuple[str, ...]:
    """The figures a search reports for its best trial and its repeats (the first orders the repeats)."""
    return tasks.of(config).headline


# ---------------------------------------------------------------- keras-tuner glue


class _MinValLoss(keras.callbacks.Callback):
    """The best val_loss of the epochs this trial trained: the objective keras-tuner ranks by."""

    def __init__(self):
        super().__init__()
        self.value = float("inf")

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(OBJECTIVE)
        if value is not None and np.isfinite(value):
            self.value = min(self.value, float(value))


class FaceattrHyperModel(kt.HyperModel):
    """build: the experiment's model with hp-chosen widths; fit: `experiment.fit_and_log` in the trial run."""

    def __init__(self, prepared: experiment.Prepared):
        super().__init__(name=prepared.config["name"])
        self.prepared = prepared

    def declare_hyperparameters(self, hp):
        declare(hp, self.prepared.config)

    def build(self, hp):
        declare(hp, self.prepared.config)
        config = apply(self.prepared.config, hp.values)
        keras.utils.set_random_seed(config["train"]["seed"])  # the same widths always start alike
        return models.build(config)

    def fit(self, hp, model, *args, run: tracking.Run, epochs=None, initial_epoch=0, callbacks=(), **kwargs):
        """Train into the trial's child `run`; return {val_loss}, penalised when the model collapsed."""
        config = apply(self.prepared.config, hp.values)
        config["train"]["epochs"] = int(epochs or config["train"]["epochs"])
        best = _MinValLoss()
        outcome = experiment.fit_and_log(dataclasses.replace(self.prepared, config=config), run, model=model,
                                         callbacks=[*callbacks, best], log_model=False,
                                         initial_epoch=int(initial_epoch))
        objective = best.value + (COLLAPSE_PENALTY if outcome.tags[COLLAPSED] == "true" else 0.0)
        run.log_metrics({"tuner_objective": objective})
        return {OBJECTIVE: objective}


class _Tracked:
    """Mixin for a keras-tuner Tuner: each trial runs inside its own nested MLflow run.

    Wrapping `run_trial` (not just HyperModel.fit) puts build errors and Hyperband's weight loading
    inside the run too, so a trial that fails for any reason leaves a FAILED child run with its error.
    """

    def setup(self, search: "Search"):
        self.search_ctx = search

    def _populate_initial_space(self):
        # Declare the space without building a model (keras-tuner's default builds one at start-up).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        ctx = self.search_ctx
        values = trial.hyperparameters.values
        widths = "?"
        try:
            widths = models.widths(apply(ctx.config, values))
        except Exception:   # the trial itself reports the error, inside its run
            pass
        tags = {**ctx.tags, ROLE: TRIAL, TRIAL_ID: str(trial.trial_id),
                TUNER_ID: str(self.tuner_id), WIDTHS: widths}
        with tracking.start_run(f"{ctx.config['name']}-trial-{trial.trial_id}-{widths}", nested=True,
                                parent_run_id=ctx.parent_run_id, experiment_id=ctx.experiment_id, tags=tags) as run:
            run.log_params({f"hp.{k.replace('/', '.')}": v for k, v in values.items()})
            try:   # keras-tuner hands `run` on to FaceattrHyperModel.fit
                return super().run_trial(trial, *args, run=run, **kwargs)
            except Exception as exc:
                run.set_tags({TRIAL_ERROR: f"{type(exc).__name__}: {exc}"[:4000]})
                raise   # leaving the `with` marks the run FAILED; keras-tuner records the trial failed


class Hyperband(_Tracked, kt.Hyperband):
    pass


class BayesianOptimization(_Tracked, kt.BayesianOptimization):
    pass


class RandomSearch(_Tracked, kt.RandomSearch):
    pass


# ---------------------------------------------------------------- the search


@dataclasses.dataclass
class Search:
    """What every trial needs to log itself into the right place."""
    config: dict
    parent_run_id: str | None
    experiment_id: str | None
    tags: dict[str, str]


def make_tuner(kind: str, prepared: experiment.Prepared, project_dir: Path, max_trials: int, factor: int,
               overwrite: bool):
    """The keras-tuner Tuner for `kind`, reloading `project_dir` unless `overwrite`."""
    if kind not in TUNERS:
        raise ConfigError(f"unknown tuner {kind!r}; use one of {', '.join(TUNERS)}")
    common = dict(hypermodel=FaceattrHyperModel(prepared), objective=kt.Objective(OBJECTIVE, "min"),
                  # keras-tuner treats seed 0 as "no seed"; +1 keeps seed 0 reproducible
                  seed=prepared.config["train"]["seed"] + 1, directory=str(project_dir.parent),
                  project_name=project_dir.name, overwrite=overwrite)
    if kind == "hyperband":
        return Hyperband(max_epochs=prepared.config["train"]["epochs"], factor=factor, **common)
    if kind == "bayesian":
        # keras-tuner's default (3 random trials per hyperparameter) would make a short search all random
        return BayesianOptimization(max_trials=max_trials, num_initial_points=min(max_trials, 3), **common)
    return RandomSearch(max_trials=max_trials, **common)


def tune(config: dict, tuner: str = "hyperband", max_trials: int = 10, factor: int = 3, repeats: int = 3,
         fresh: bool = False, directory: str | None = None, parent_run_id: str | None = None) -> dict:
    """`faceattr tune`: run (or resume, or join as a worker) a search; return its summary."""
    if repeats < 1:
        raise ConfigError(f"repeats: must be at least 1, got {repeats}")
    if max_trials < 1 or factor < 2:
        raise ConfigError(f"max_trials must be >= 1 and factor >= 2, got {max_trials}, {factor}")
    declare(kt.HyperParameters(), config)   # a bad search: section fails here, before any compute
    project_dir = Path(directory or Path("tuner") / config["name"]).resolve()
    worker = is_worker()
    prepared = experiment.gather(config)
    # A worker never wipes the shared project directory: only the chief (or a lone tuner) may.
    tuner_obj = make_tuner(tuner, prepared, project_dir, max_trials, factor, overwrite=fresh and not worker)
    tracking.system_metrics_node(tuner_obj.tuner_id)   # chief or worker: its own system metrics
    if worker:
        return _work(tuner_obj, prepared, project_dir, parent_run_id or os.environ.get(PARENT_ENV))
    state = _state(project_dir, tuner)
    tracking.use_experiment(config["name"])
    tags = {**tracking.run_tags(config, prepared.data), SEARCH_ID: state["search_id"],
            TUNING_DIR: str(project_dir)}
    with tracking.start_run(f"{config['name']}-tune-{tuner}", tags={**tags, ROLE: SEARCH}) as parent:
        run_id, experiment_id = parent.run_id, parent.experiment_id
        _write_state(project_dir, {**state, "parent_run_id": run_id})
        earlier = _close_earlier_runs(experiment_id, state["search_id"], run_id)
        if earlier:
            parent.set_tags({RESUMED_FROM: earlier})
        tracking.log_config(parent, config)
        planned = hyperband_trials(config["train"]["epochs"], factor) if tuner == "hyperband" else max_trials
        parent.log_params({"tuning.tuner": tuner, "tuning.factor": factor, "tuning.repeats": repeats,
                           "tuning.max_epochs": config["train"]["epochs"], "tuning.planned_trials": planned,
                           "tuning.directory": str(project_dir), "tuning.search_id": state["search_id"]})
        parent.log_metrics({"planned_trials": planned})
        tuner_obj.setup(Search(config, run_id, experiment_id, tags))
        started = time.time()
        error = None
        try:
            tuner_obj.search(epochs=config["train"]["epochs"], verbose=config["train"]["verbose"])
        except RuntimeError as exc:   # keras-tuner's "consecutive failures exceeded the limit"
            error = exc
        parent.log_metrics({"search_seconds": time.time() - started})
        best = _choose_best(parent, tuner_obj.oracle, state["search_id"], error)
        _log_best(parent, best, config)
        summary = _repeat_and_register(parent, prepared, config, best, repeats, tags)
        return {"parent_run_id": run_id, "resumed_from": earlier, **best["summary"], **summary}


def is_worker() -> bool:
    """keras-tuner's distributed mode: this process runs trials for a chief oracle elsewhere
    (KERASTUNER_TUNER_ID names it: `chief` for the oracle, anything else for a worker)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "chief")


def _work(tuner_obj, prepared, project_dir: Path, parent_run_id: str | None) -> dict:
    """A distributed worker: run trials as children of the chief's parent run until the oracle stops."""
    parent_run_id = parent_run_id or _wait_for_parent(project_dir)
    parent = tracking.get_run(parent_run_id)
    tags = {**tracking.run_tags(prepared.config, prepared.data), SEARCH_ID: parent.data.tags[SEARCH_ID],
            TUNING_DIR: str(project_dir)}
    tuner_obj.setup(Search(prepared.config, parent_run_id, parent.info.experiment_id, tags))
    tuner_obj.search(epochs=prepared.config["train"]["epochs"], verbose=prepared.config["train"]["verbose"])
    return {"parent_run_id": parent_run_id, "worker": tuner_obj.tuner_id}


def _state(project_dir: Path, tuner: str) -> dict:
    """The search's id (kept across resumes; new when the project directory is new or wiped)."""
    path = project_dir / STATE_FILE
    if path.is_file():
        state = json.loads(path.read_text())
        if state.get("tuner") != tuner:
            raise ConfigError(f"{project_dir} holds a {state.get('tuner')} search; resume it with --tuner "
                              f"{state.get('tuner')}, or start over with --fresh or another --directory")
        return state
    return {"search_id": uuid.uuid4().hex, "tuner": tuner}


def _write_state(project_dir: Path, state: dict) -> None:
    write_atomic(project_dir / STATE_FILE, json.dumps(state, indent=1))   # a worker never reads half a file


def _wait_for_parent(project_dir: Path, timeout: float = 600) -> str:
    """The chief writes its parent run id into the shared project directory; wait for it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = project_dir / STATE_FILE
        if path.is_file():
            run_id = json.loads(path.read_text()).get("parent_run_id")
            if run_id and tracking.get_run(run_id).info.status == "RUNNING":
                return run_id
        time.sleep(2)
    raise TuningError(f"no running chief found in {project_dir} after {timeout:.0f} s: start the chief "
                      f"first, or pass --parent-run-id / {PARENT_ENV}")


def _runs(experiment_id: str, search_id: str, extra: str = "") -> list:
    query = f"tags.`{SEARCH_ID}` = '{search_id}'" + (f" and {extra}" if extra else "")
    return tracking.find_runs(experiment_id, query)


def _close_earlier_runs(experiment_id: str, search_id: str, current: str) -> str | None:
    """Mark runs a killed earlier attempt left RUNNING as KILLED; return the latest earlier parent's id."""
    for run in _runs(experiment_id, search_id, "attributes.status = 'RUNNING'"):
        if run.info.run_id != current:
            tracking.set_terminated(run.info.run_id, "KILLED")
    parents = [r for r in _runs(experiment_id, search_id, f"tags.`{ROLE}` = '{SEARCH}'")
               if r.info.run_id != current]
    return parents[-1].info.run_id if parents else None


def _choose_best(parent: tracking.Run, oracle, search_id: str, error: Exception | None) -> dict:
    """The best completed, not collapsed trial of the whole search (earlier attempts included)."""
    trials = list(oracle.trials.values())
    done = [t for t in trials if t.status == "COMPLETED"]
    failed = [t for t in trials if t.status in ("FAILED", "INVALID")]
    runs = {}
    for run in _runs(parent.experiment_id, search_id, f"tags.`{ROLE}` = '{TRIAL}' and attributes.status = 'FINISHED'"):
        runs[run.data.tags[TRIAL_ID]] = run   # a retried trial: its last finished run
    epochs = sum(int(r.data.metrics.get("epochs_trained", 0)) for r in runs.values())
    collapsed = [t for t in done if runs.get(t.trial_id) is None
                 or runs[t.trial_id].data.tags.get(COLLAPSED) == "true"]
    parent.log_metrics({"trials": len(trials), "trials_completed": len(done), "trials_failed": len(failed),
                        "trials_collapsed": len(collapsed), "epochs_total": epochs})
    if not done:
        first = min(failed, key=lambda t: t.trial_id) if failed else None
        why = _last_line(first.message) if first is not None else (str(error) or "no trial ran")
        raise TuningError(f"no trial succeeded ({len(failed)} of {len(trials)} failed); first error "
                          f"(trial {first.trial_id if first else '-'}): {why}")
    usable = sorted((t for t in done if t not in collapsed), key=lambda t: t.score)
    if not usable:
        raise TuningError(f"every completed trial ({len(done)}) collapsed; no model to register")
    trial = usable[0]
    return {"trial": trial, "run": runs[trial.trial_id], "values": search_values(trial.hyperparameters.values),
            "summary": {"trials": len(trials), "trials_completed": len(done), "trials_failed": len(failed),
                        "trials_collapsed": len(collapsed), "epochs_total": epochs,
                        "best_trial": trial.trial_id, "best_run_id": runs[trial.trial_id].info.run_id}}


def _log_best(parent: tracking.Run, best: dict, config: dict) -> None:
    metrics = best["run"].data.metrics
    parent.log_params({f"best.{k}": v for k, v in best["values"].items()})
    parent.log_params({"best.trial_id": best["trial"].trial_id, "best.run_id": best["run"].info.run_id,
                       "best.widths": models.widths(apply(config, best["values"]))})
    keys = headline_metrics(config)
    parent.log_metrics({f"best_{k}": metrics[k] for k in keys if k in metrics})
    parent.log_metrics({f"best_{OBJECTIVE}": best["trial"].score})
    best["summary"].update({f"best_{k}": metrics[k] for k in keys if k in metrics})


def _repeat_and_register(parent: tracking.Run, prepared, config: dict, best: dict, repeats: int, tags: dict) -> dict:
    """Retrain the best configuration with seeds 0..repeats-1; register the median run's model."""
    keys = headline_metrics(config)
    outcomes = []
    for seed in range(repeats):
        cfg = apply(config, best["values"])
        cfg["train"]["seed"] = seed
        with tracking.start_run(f"{config['name']}-repeat-s{seed}-{models.widths(cfg)}",
                              nested=True, tags={**tags, ROLE: REPEAT, SEED: str(seed),
                                                 WIDTHS: models.widths(cfg)}) as run:
            outcome = experiment.fit_and_log(dataclasses.replace(prepared, config=cfg), run)
            outcomes.append((outcome, run.run_id, seed))
    figures = {}
    for key in keys:
        values = np.array([o.metrics.get(key, np.nan) for o, _, _ in outcomes], float)
        figures[f"repeat_{key}_mean"] = float(np.mean(values))
        figures[f"repeat_{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    parent.log_metrics(figures)
    # The median by the headline metric: a typical retrain, not the luckiest seed.
    ordered = sorted(outcomes, key=lambda o: o[0].metrics.get(keys[0], np.nan))
    median, median_run, median_seed = ordered[(len(ordered) - 1) // 2]
    version = parent.register_model(median.model_uri, config["name"])
    registry.record(config["name"], str(version.version), {
        key: str(value) for key, value in {**figures, "repeats": repeats, "repeat_seed": median_seed,
                                           "repeat_run_id": median_run, "tuning_run_id": parent.run_id,
                                           SEARCH_ID: tags[SEARCH_ID]}.items()})
    parent.set_tags({REGISTERED_VERSION: version.version, MEDIAN_RUN: median_run})
    return {**figures, "registered_model": config["name"], "version": version.version,
            "median_run_id": median_run, "model_uri": median.model_uri}


def _last_line(message: str | None) -> str:
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
