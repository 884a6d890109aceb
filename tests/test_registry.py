"""Promotion: the policy, rollback, the lock and the repair of a promotion killed half-way."""

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from helpers import subprocess_env

from faceattr import registry
from faceattr import promotion as promote
from faceattr.cli import main
from faceattr.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
POLICY = promote.Policy(model="eyes", metric="mse", higher_is_better=False,
                        thresholds={"baseline_ratio": {"min": 1.5}}, margin={"relative": 0.02})


def good(mse, **extra):
    return {"mse": mse, "baseline_ratio": 3.0, "collapsed": False, "collapse_std_ratio": 0.8, **extra}


# --- policy ----------------------------------------------------------------------------------

def test_first_version_is_judged_on_thresholds_alone():
    assert promote.decide(POLICY, good(0.02), None).promote
    low = promote.decide(POLICY, good(0.02, baseline_ratio=1.2), None)
    assert not low.promote and "baseline_ratio 1.2 is below the minimum 1.5" in low.reasons[0]


def test_collapse_refuses_even_a_better_model():
    decision = promote.decide(POLICY, good(0.01, collapsed=True, collapse_std_ratio=0.1), good(0.05))
    assert not decision.promote and "collapsed" in decision.reasons[0]
    lax = promote.Policy(**{**POLICY.__dict__, "require_no_collapse": False})
    assert promote.decide(lax, good(0.01, collapsed=True), good(0.05)).promote


def test_margin_over_the_champion():
    assert promote.decide(POLICY, good(0.0195), good(0.02)).promote             # 2.5% better
    decision = promote.decide(POLICY, good(0.0197), good(0.02))                 # 1.5% better: not enough
    assert not decision.promote and "does not beat the champion's 0.02" in decision.reasons[0]
    assert not promote.decide(POLICY, good(0.03), good(0.02)).promote
    assert not promote.decide(POLICY, good(float("nan"), baseline_ratio=math.inf), good(0.02)).promote
    gender = promote.Policy.load("gender")
    win = {"accuracy": 0.95, "collapsed": False}
    assert promote.decide(gender, win, {"accuracy": 0.90}).promote
    assert not promote.decide(gender, {"accuracy": 0.91, "collapsed": False}, {"accuracy": 0.90}).promote
    assert not promote.decide(gender, {"accuracy": 0.70, "collapsed": False}, None).promote  # below 0.75


def test_shipped_policies_load_and_bad_ones_are_clear(tmp_path):
    for name in ("eyes", "mouth", "background", "gender"):
        policy = promote.Policy.load(name)
        assert policy.margin.relative == 0.02 and policy.require_no_collapse
    assert promote.Policy.load("eyes").thresholds["baseline_ratio"].model_dump(exclude_none=True) == {"min": 1.5}
    bad = tmp_path / "p.yaml"
    bad.write_text("metric: mse\nhigher_is_better: false\nmargn: {relative: 0.1}\n")
    with pytest.raises(ConfigError, match="margn"):
        promote.Policy.load("eyes", bad)
    with pytest.raises(ConfigError, match="no promotion policy"):
        promote.Policy.load("nose")


# --- registry moves (versions without models: the moves never load them) ---------------------

@pytest.fixture
def versions(mlflow_store):
    """Registered model `eyes` with three versions pointing at a dummy artifact."""
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_text("x", "model/placeholder.txt")
    client.create_registered_model("eyes")
    for _ in range(3):
        client.create_model_version("eyes", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return client


def state(client, name="eyes"):
    alias = registry.champion(name)
    prod = sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'")
                  if v.current_stage == "Production")
    return (str(alias.version) if alias else None), prod


def fake_promote(version, champion):
    """What promote() records and moves on a pass, without evaluating models."""
    registry.record("eyes", version, {registry.PREVIOUS: champion or "none"})
    registry.move_champion("eyes", version)


def test_rollback_walks_the_chain_with_an_audit_trail(versions, capsys):
    with pytest.raises(registry.RegistryError, match="no champion"):
        promote.rollback("eyes")
    fake_promote("1", None)
    fake_promote("2", "1")
    fake_promote("3", "2")
    assert state(versions) == ("3", ["3"])
    assert main(["promote", "eyes", "--rollback"]) == 0
    assert "version 2 is the champion again" in capsys.readouterr().out
    assert state(versions) == ("2", ["2"])
    assert "faceattr.rolled_back" in versions.get_model_version("eyes", "3").tags
    assert "after a rollback of version 3" in versions.get_model_version("eyes", "2").description
    result = promote.rollback("eyes")
    assert state(versions) == ("1", ["1"]) and result.champion == "2"
    with pytest.raises(registry.RegistryError, match="first champion"):
        promote.rollback("eyes")
    runs = mlflow.search_runs(experiment_names=["promote-eyes"])
    assert set(runs["tags.faceattr.decision"]) == {"rolled-back"} and len(runs) == 2
    assert set(runs["params.to_version"]) == {"2", "1"}


def test_repair_follows_the_alias(versions):
    fake_promote("1", None)
    registry._transition("eyes", "2", "Production")          # a second Production version
    registry._transition("eyes", "1", "Archived")
    assert state(versions) == ("1", ["2"])
    fixed = registry.repair("eyes")
    assert state(versions) == ("1", ["1"]) and "moved Production back to version 1" in fixed[0]
    assert registry.repair("eyes") == []                       # consistent: nothing to do


def test_lock_file_sits_next_to_the_sqlite_store(mlflow_store, tmp_path, monkeypatch):
    lock = registry.promotion_lock("eyes")
    assert isinstance(lock, registry.FileLock) and lock.path == tmp_path / "mlflow.db.promote-eyes.lock"
    monkeypatch.setenv(registry.LOCK_ENV, "postgresql://tracking-db/mlflow")
    assert isinstance(registry.promotion_lock("eyes"), registry.PostgresAdvisoryLock)
    monkeypatch.delenv(registry.LOCK_ENV)
    monkeypatch.setattr(mlflow, "get_registry_uri", lambda: "https://mlflow.example.com")
    with pytest.raises(registry.RegistryError, match=registry.LOCK_ENV):
        registry.promotion_lock("eyes")


# --- concurrency and crashes: real promote() in subprocesses, with a fake evaluation ----------

PROMOTER = textwrap.dedent("""
    import sys, time
    from types import SimpleNamespace
    from faceattr import promotion as promote

    SCORES = {"1": 0.05, "2": 0.04, "3": 0.03}
    promote.training_config = lambda version, eval_data=None: {
        "data": {"source": "fake"}, "evaluation": {"collapse_threshold": 0.25}}
    promote.eval_set = lambda cfg, descriptors=False: SimpleNamespace(name="fake", digest="0", test=[0] * 10)

    def judge_version(version, data, threshold):
        time.sleep(0.5)   # a real evaluation takes time: widen the race window
        return {"mse": SCORES[str(version.version)], "baseline_ratio": 2.0, "collapsed": False,
                "collapse_std_ratio": 0.9}

    promote.judge_version = judge_version
    policy = promote.Policy(model="eyes", metric="mse", higher_is_better=False,
                            thresholds={"baseline_ratio": {"min": 1.5}}, margin={"relative": 0.02})
    result = promote.promote("eyes", sys.argv[1], policy=policy)
    print("ACTION", result.action, result.champion)
    sys.exit(result.exit_code)
""")


def promoter(tmp_path, version, **env):
    script = tmp_path / "promoter.py"
    script.write_text(PROMOTER)
    return subprocess.Popen([sys.executable, str(script), version], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})


@pytest.mark.slow
def test_two_promotes_at_once_are_serialised(versions, tmp_path):
    procs = [promoter(tmp_path, "1"), promoter(tmp_path, "2")]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode in (0, 3), err[-2000:]
    assert state(versions) == ("2", ["2"])    # v2 is better: it wins whichever ran first
    runs = mlflow.search_runs(experiment_names=["promote-eyes"])
    # under the lock the second promote saw the first one's result: at most one saw no champion
    assert (runs["params.champion_version"] == "none").sum() == 1
    assert len(runs) == 2


@pytest.mark.slow
def test_a_promote_killed_between_stage_and_alias_is_repaired(versions, tmp_path):
    fake_promote("1", None)
    proc = promoter(tmp_path, "2", **{registry.CRASH_ENV: "9"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 9, err[-2000:]
    assert state(versions) == ("1", ["2"])    # split: the stage moved, the alias (the commit) did not
    proc = promoter(tmp_path, "3")            # the next promote repairs first (the lock was freed by the kernel)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "ACTION promoted 1" in out         # judged against the true champion, v1
    assert state(versions) == ("3", ["3"])
    assert "faceattr.repaired" in versions.get_model_version("eyes", "1").tags


def test_a_first_promote_killed_half_way_leaves_no_champion(versions, tmp_path):
    proc = promoter(tmp_path, "1", **{registry.CRASH_ENV: "9"})
    proc.communicate(timeout=120)
    assert proc.returncode == 9
    assert state(versions) == (None, ["1"])
    with registry.promotion_lock("eyes"):
        assert "no version holds alias" in registry.repair("eyes")[0]
    assert state(versions) == (None, [])


LENIENT_GENDER = """# test override: promote any first gender model that is not broken
model: gender
metric: accuracy
higher_is_better: true
thresholds: {}
require_no_collapse: false
"""


def project_copy(dst: Path, policies: dict[str, str]) -> Path:
    """The project as `mlflow run` sees it (MLproject, faceattr/, experiments/, registry/), with some
    promotion policies replaced: `mlflow run` of the copy runs the copy's code and reads its policies."""
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "mlruns", "*.db", "tests", "docs",
                                    "benchmarks")
    shutil.copytree(REPO, dst, ignore=ignore)
    for name, text in policies.items():
        (dst / "registry" / f"{name}.yaml").write_text(text)
    return dst


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_mlflow_run_main_trains_and_promotes_every_model(tmp_path, synthetic_cache):
    # one epoch on 100 photos: registry/gender.yaml (accuracy >= 0.75) refuses such a gender model, so the
    # copy's policy promotes it, and the regressions must then train on that promoted gender model
    project = project_copy(tmp_path / "project", {"gender": LENIENT_GENDER})
    env = subprocess_env(tmp_path)
    cmd = [sys.executable, "-m", "mlflow", "run", str(project), "--env-manager", "local",
           "-P", "epochs=1", "-P", "data_size=100"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        client = mlflow.MlflowClient()
        decisions = {}
        for name in ("gender", "background", "eyes", "mouth"):
            (version,) = client.search_model_versions(f"name = '{name}'")             # trained and registered
            runs = mlflow.search_runs(experiment_names=[f"promote-{name}"])
            assert len(runs) == 1 and runs["tags.faceattr.decision"][0] in ("promoted", "refused")
            decisions[name] = (runs["tags.faceattr.decision"][0], version)
        decision, gender = decisions["gender"]
        assert decision == "promoted" and str(registry.champion("gender").version) == str(gender.version)
        for name in ("background", "eyes", "mouth"):
            run = client.get_run(decisions[name][1].run_id)
            assert run.data.params["gender_source"] == f"model:gender/{gender.version}", name
            served = mlflow.pyfunc.load_model(f"models:/{name}/{decisions[name][1].version}").unwrap_python_model()
            assert served.gender_model is not None, name       # it carries the gender model it trained with
    finally:
        mlflow.set_tracking_uri(None)
