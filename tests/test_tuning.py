"""Hyperparameter search: nested runs, best and registration, failures, resume after a kill, distributed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from helpers import eager_steps, subprocess_env, wait_for_port

from faceattr import config, models, tuning
from faceattr.cli import main

REPO = Path(__file__).resolve().parents[1]
# Tiny searches; a 120-photo set trained 1-3 epochs often predicts near-constant values, so the
# collapse threshold is lowered here (collapse handling itself is checked on its own below).
TINY = ["--data.size", "120", "--train.verbose", "0", "--evaluation.collapse_threshold", "0.02"]


def runs_of(role=None):
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r for r in runs if role is None or r.data.tags.get(tuning.ROLE) == role]


def test_search_space_comes_from_the_yaml_and_maps_back_to_a_config():
    cfg = config.load("eyes")
    hp = tuning.kt.HyperParameters()
    tuning.declare(hp, cfg)
    assert set(hp.values) == {*(f"filters_{i}" for i in range(5)), "dense_0", "dense_1", "dropout",
                              "learning_rate"}
    out = tuning.apply(cfg, {"filters_0": 16, "dense_0": 128, "dense_1": 32, "dropout": 0.3,
                             "learning_rate": 0.002, "tuner/epochs": 3})
    assert models.widths(out) == "16-48-64-96-128/128/32"
    assert out["model"]["dropout"] == 0.3 and out["train"]["learning_rate"] == 0.002
    assert models.widths(cfg) == "32-48-64-96-128/320/120"   # the original is untouched
    with pytest.raises(config.ConfigError, match="search.filters"):   # refused at load, before any compute
        config.load("eyes", {"search.filters": "[[16, 32]]"})


@pytest.mark.parametrize("max_epochs,factor,trials", [(2, 3, 2), (3, 3, 6), (4, 3, 10), (8, 3, 10), (9, 3, 23)])
def test_hyperband_trial_count(max_epochs, factor, trials):
    assert tuning.hyperband_trials(max_epochs, factor) == trials


@pytest.mark.slow
def test_hyperband_search_nests_trials_logs_best_and_registers_the_median_repeat(mlflow_store, synthetic_cache):
    code = main(["tune", "eyes", "--epochs", "3", "--repeats", "2", *TINY])
    assert code == 0
    (parent,) = runs_of("search")
    trials, repeats = runs_of("trial"), runs_of("repeat")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["planned_trials"] == parent.data.metrics["trials"] == 6 == len(trials)
    for run in trials + repeats:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
    assert sorted(int(r.data.tags[tuning.TRIAL_ID]) for r in trials) == list(range(6))
    client = mlflow.MlflowClient()
    continued = 0
    for run in trials:
        params, metrics = run.data.params, run.data.metrics
        # the trial's hyperparameters, and the config they made (as `faceattr train` logs it)
        assert params["model.dense_0"] == params["hp.dense_0"]
        assert params["model.conv.2.filters"] == params["hp.filters_2"]
        assert float(params["train.learning_rate"]) == pytest.approx(float(params["hp.learning_rate"]))
        assert {"val_mse", "baseline_ratio", "collapse_std_ratio", "epochs_trained"} <= set(metrics)
        assert run.data.tags["collapsed"] in ("true", "false")
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        start = int(params["hp.tuner.initial_epoch"])
        assert steps == list(range(start, int(params["hp.tuner.epochs"])))   # Hyperband's later rounds resume
        continued += start > 0
    assert continued >= 1
    assert parent.data.metrics["epochs_total"] == sum(r.data.metrics["epochs_trained"] for r in trials)
    best = next(r for r in trials if r.info.run_id == parent.data.params["best.run_id"])
    assert best.data.tags["collapsed"] == "false"
    for name in ("dense_0", "dense_1", "dropout", "learning_rate", "filters_0"):
        assert parent.data.params[f"best.{name}"] == best.data.params[f"hp.{name}"]
    assert parent.data.metrics["best_val_mse"] == best.data.metrics["val_mse"]
    assert parent.data.metrics["best_baseline_ratio"] == best.data.metrics["baseline_ratio"]
    # repeats: the best widths, seeds 0 and 1, each with a model; mean/std on the parent
    assert sorted(r.data.params["train.seed"] for r in repeats) == ["0", "1"]
    assert {r.data.tags["faceattr.widths"] for r in repeats} == {parent.data.params["best.widths"]}
    for key in ("val_mse", "baseline_ratio"):
        assert {f"repeat_{key}_mean", f"repeat_{key}_std"} <= set(parent.data.metrics)
    (version,) = client.search_model_versions("name='eyes'")
    assert version.run_id in {r.info.run_id for r in repeats}
    assert version.run_id == parent.data.tags["faceattr.median_run_id"]
    assert float(version.tags["repeat_val_mse_mean"]) == pytest.approx(parent.data.metrics["repeat_val_mse_mean"])
    assert "repeat_baseline_ratio_std" in version.tags and version.tags["repeats"] == "2"
    assert not version.aliases   # registration only; promotion is a separate policy


def test_a_search_where_every_trial_collapses_registers_nothing(mlflow_store, synthetic_cache, capsys, monkeypatch):
    monkeypatch.setattr(tuning.experiment.evaluate, "collapse_check", lambda *a: (0.01, True))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")   # a sample within the short trial
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_NODE_ID", raising=False)   # tune sets it; restored after
    with eager_steps():
        code = main(["tune", "eyes", "--tuner", "random", "--max-trials", "1", "--epochs", "1", *TINY])
    assert code != 0
    assert "every completed trial (1) collapsed" in capsys.readouterr().err
    (parent,) = runs_of("search")
    assert parent.info.status == "FAILED" and parent.data.metrics["trials_collapsed"] == 1
    (trial,) = runs_of("trial")
    assert trial.data.tags["collapsed"] == "true"
    assert trial.data.metrics["tuner_objective"] >= tuning.COLLAPSE_PENALTY   # the oracle ranks it last
    assert "system/tuner0/cpu_utilization_percentage" in trial.data.metrics   # this tuner's node id
    assert not mlflow.MlflowClient().search_registered_models()


@pytest.mark.parametrize("max_trials", [2, 4])   # 4: keras-tuner itself stops after 3 consecutive failures
def test_when_every_trial_fails_the_search_exits_non_zero_with_the_first_error(
        max_trials, mlflow_store, synthetic_cache, monkeypatch, capsys):
    def broken(cfg):
        raise RuntimeError(f"injected build failure for {cfg['name']}")

    monkeypatch.setattr(tuning.models, "build", broken)
    code = main(["tune", "eyes", "--tuner", "random", "--max-trials", str(max_trials), "--epochs", "1", *TINY])
    err = capsys.readouterr().err
    assert code != 0
    assert "no trial succeeded" in err and "RuntimeError: injected build failure for eyes" in err
    assert "(trial 0)" in err
    (parent,) = runs_of("search")
    assert parent.info.status == "FAILED"
    trials = runs_of("trial")
    assert len(trials) == min(max_trials, 3)
    for run in trials:
        assert run.info.status == "FAILED"
        assert "injected build failure" in run.data.tags["faceattr.error"]
    assert not mlflow.MlflowClient().search_registered_models()


def tune_command(*args, model="eyes"):
    return [sys.executable, "-m", "faceattr", "tune", model, *args, *TINY]


def tune_env(tmp_path, **extra):
    return subprocess_env(tmp_path, **extra)


# `faceattr tune ...` whose second trial, once started, says so (a file) and then waits to be killed: the
# test kills the search between two trials at a known point, however fast or slow the machine is.
GATED_TUNE = """
import sys, time
from pathlib import Path
from faceattr import tuning
from faceattr.cli import main

gate = Path(sys.argv[1])
fit = tuning.FaceattrHyperModel.fit
calls = []

def gated_fit(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        (gate / "second-trial-started").touch()
        time.sleep(600)
        sys.exit("gated search: nobody killed the second trial")
    return fit(self, *args, **kwargs)

tuning.FaceattrHyperModel.fit = gated_fit
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_killed_search_resumes_without_rerunning_finished_trials(tmp_path, mlflow_store, synthetic_cache):
    cmd = tune_command("--tuner", "random", "--max-trials", "3", "--epochs", "3", "--repeats", "1")
    env = tune_env(tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    gated = [sys.executable, "-c", GATED_TUNE, str(gate), *cmd[cmd.index("tune"):]]
    proc = subprocess.Popen(gated, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600   # only a guard against a hang: we wait for the event
        while not (gate / "second-trial-started").exists():
            if proc.poll() is not None:
                pytest.fail(f"the search ended before its second trial: {proc.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "the second trial never started"
            time.sleep(0.1)
        statuses = sorted(r.info.status for r in runs_of("trial"))
        assert statuses == ["FINISHED", "RUNNING"], statuses   # one trial done, one under way
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    before = {r.info.run_id: r for r in runs_of("trial")}
    finished_before = {r.data.tags[tuning.TRIAL_ID] for r in before.values() if r.info.status == "FINISHED"}
    (killed,) = [r for r in before.values() if r.info.status == "RUNNING"]
    (first_parent,) = runs_of("search")

    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient()
    assert client.get_run(killed.info.run_id).info.status == "KILLED"
    assert client.get_run(first_parent.info.run_id).info.status == "KILLED"
    (second_parent,) = [r for r in runs_of("search") if r.info.run_id != first_parent.info.run_id]
    assert second_parent.data.tags[tuning.RESUMED_FROM] == first_parent.info.run_id
    assert second_parent.data.tags[tuning.SEARCH_ID] == first_parent.data.tags[tuning.SEARCH_ID]
    trials = runs_of("trial")
    finished = [r for r in trials if r.info.status == "FINISHED"]
    ids = sorted(r.data.tags[tuning.TRIAL_ID] for r in finished)
    assert ids == ["0", "1", "2"]                          # every trial finished exactly once
    for run in finished:                                   # earlier ones were not re-run or re-logged
        expected = first_parent if run.data.tags[tuning.TRIAL_ID] in finished_before else second_parent
        assert run.data.tags["mlflow.parentRunId"] == expected.info.run_id
    assert len(trials) == 4                                # 3 finished + the killed attempt
    assert second_parent.data.metrics["trials_completed"] == 3
    assert second_parent.data.params["best.run_id"] in {r.info.run_id for r in finished}
    assert client.search_model_versions("name='eyes'")


def run_chief_and_workers(cmd, cwd, env, workers=2, timeout=540):
    """Run `cmd` as a keras-tuner chief and `workers` workers; fail on any non-zero exit.

    The chief's oracle binds port 0 (a free port of its own choosing, so no other process can take it
    between our choice and its bind); the workers start once it listens, told that port.
    Also used by tests/test_server.py (the same search against the team tracking server)."""
    base = {**env, "KERASTUNER_ORACLE_IP": "127.0.0.1"}
    procs, logs = {}, {}
    try:
        logs["chief"] = Path(cwd) / "chief.log"
        with open(logs["chief"], "w") as log:
            procs["chief"] = subprocess.Popen(
                cmd, cwd=cwd, env={**base, "KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_PORT": "0"},
                stdout=subprocess.DEVNULL, stderr=log, text=True, start_new_session=True)
        port = wait_for_port(procs["chief"], "the keras-tuner chief", timeout=timeout, log=logs["chief"])
        for tuner_id in (f"tuner{i}" for i in range(workers)):
            logs[tuner_id] = Path(cwd) / f"{tuner_id}.log"
            with open(logs[tuner_id], "w") as log:
                procs[tuner_id] = subprocess.Popen(
                    cmd, cwd=cwd, env={**base, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_PORT": str(port)},
                    stdout=subprocess.DEVNULL, stderr=log, text=True)
        for p in procs.values():
            p.wait(timeout=timeout)
        errors = {k: logs[k].read_text(errors="replace") for k in procs}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}: {errors[name][-3000:]}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_distributed_chief_and_two_workers_log_every_trial_once_under_one_parent(tmp_path, mlflow_store,
                                                                                 synthetic_cache):
    cmd = tune_command("--tuner", "random", "--max-trials", "3", "--epochs", "1", "--repeats", "1",
                       "--directory", str(tmp_path / "shared-tuner"))
    mlflow.search_experiments()   # create the sqlite tables now: three processes racing to do it collide
    run_chief_and_workers(cmd, tmp_path, tune_env(tmp_path))
    (parent,) = runs_of("search")
    trials = runs_of("trial")
    assert sorted(r.data.tags[tuning.TRIAL_ID] for r in trials) == ["0", "1", "2"]
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["faceattr.tuner_id"] in ("tuner0", "tuner1")   # the chief runs no trial
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_completed"] == 3
    (repeat,) = runs_of("repeat")
    assert repeat.data.tags["mlflow.parentRunId"] == parent.info.run_id
