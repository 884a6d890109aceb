"""The team tracking server (faceattr/server.py) and the outbox (faceattr/tracking/outbox.py), end to end.

One PostgreSQL + SeaweedFS S3 + mlflow server for the module (starting them takes ~30 s); every
entry point runs as a subprocess with only MLFLOW_TRACKING_URI pointing at it: train/promote/serve,
a distributed search (chief + 2 workers, tests/test_tuning.py's launcher), 4 trainings at once. The
fault tests stop and restart one of the three. All slow. Where PostgreSQL or `weed` is missing they skip
on a developer's machine and fail under CI (helpers.require).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import require_mlflow_serve, require_postgres, require_weed, wait_for_port

# slow; each test may train several models against three servers (the fixture's start counts in the first)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
VENV_BIN = Path(sys.executable).parent


def _group_pids(pgids: set[int]) -> set[int]:
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().split(")")[-1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] != "Z":
                out.add(int(proc.name))
    return out


def _pids_mentioning(text: str) -> set[int]:
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    out.add(int(proc.name))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def server(synthetic_cache):
    from faceattr.server import Server, ServerError

    require_postgres()
    require_weed()
    root = Path(tempfile.mkdtemp(prefix="faceattr-server-", dir="/tmp"))
    root.chmod(0o755)   # the postgres user must reach DIR/postgres
    srv = Server(root)
    started = time.monotonic()
    try:
        try:
            srv.start()
        except ServerError as exc:
            # Server picks its ports by bind-and-release (weed and postgres need them named up front):
            # another process may take one in between. Only that, said in a log, earns a second start.
            logs = " ".join(p.read_text(errors="replace") for p in (root / "logs").glob("*.log"))
            if "address already in use" not in f"{exc} {logs}".lower():
                raise
            srv.stop()
            srv.state_path.unlink()
            srv.start()
        srv.start_seconds = time.monotonic() - started
        yield srv
    finally:
        srv.stop()
        leftover = _pids_mentioning(str(root))
        for pid in leftover:   # never leave a server behind, even when the check below fails
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes left behind: {leftover}"


@pytest.fixture
def env(server, synthetic_cache, tmp_path):
    """A client's environment: only MLFLOW_TRACKING_URI (artifacts are proxied by the server)."""
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_")) and k != "FACEATTR_PROMOTE_LOCK"}
    out.update({"MLFLOW_TRACKING_URI": server.tracking_uri(), "FACEATTR_CACHE": str(synthetic_cache),
                "FACEATTR_OUTBOX": str(tmp_path / "outbox"), "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
                "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)})
    return out


def faceattr(env, *args, cwd, check=True, timeout=600):
    done = subprocess.run([str(VENV_BIN / "faceattr"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"faceattr {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done


def client(server):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=server.tracking_uri(), registry_uri=server.tracking_uri())


def s3_keys(server) -> list[str]:
    import boto3

    cred = server.credentials()
    s3 = boto3.client("s3", endpoint_url=server.s3_endpoint(), aws_access_key_id=cred["aws_access_key_id"],
                      aws_secret_access_key=cred["aws_secret_access_key"], region_name="us-east-1")
    keys, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket="mlflow", **({"ContinuationToken": token} if token else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def pg_run_ids(server) -> set[str]:
    import psycopg

    with psycopg.connect(server.postgres_url(driver="postgresql")) as conn:
        return {row[0] for row in conn.execute("SELECT run_uuid FROM runs")}


def epoch_series(c, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in c.get_metric_history(run_id, key))


def test_train_promote_serve_against_the_server(server, env, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.tracking_uri())
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.tracking_uri())
    timings = {"start servers": round(server.start_seconds, 1)}
    assert all(s["running"] and s["listening"] for s in server.status().values())

    t = time.monotonic()
    out = faceattr(env, "train", "mouth", "--epochs", "1", "--data.size", "100", cwd=tmp_path)
    timings["train"] = round(time.monotonic() - t, 1)
    assert "registered=" in out.stdout and "unreachable" not in out.stderr

    c = client(server)
    run = c.search_runs([c.get_experiment_by_name("mouth").experiment_id], order_by=["start_time DESC"])[0]
    assert run.info.status == "FINISHED" and epoch_series(c, run.info.run_id) == [0]

    # promotion under the PostgreSQL advisory lock (a plain postgresql:// URL: psycopg 3 drives it)
    policy = tmp_path / "lenient.yaml"
    policy.write_text("model: mouth\nmetric: mse\nhigher_is_better: false\nthresholds: {}\n"
                      "require_no_collapse: false\n")
    t = time.monotonic()
    promo_env = {**env, "FACEATTR_PROMOTE_LOCK": server.postgres_url(driver="postgresql")}
    out = faceattr(promo_env, "promote", "mouth", "--policy", str(policy), cwd=tmp_path)
    timings["promote"] = round(time.monotonic() - t, 1)
    assert c.get_model_version_by_alias("mouth", "champion").current_stage == "Production"

    # serve the promoted model from the registry and query it once: it must answer what the model
    # itself answers for its serving example
    require_mlflow_serve()
    version = c.get_model_version_by_alias("mouth", "champion")
    uri = f"models:/mouth/{version.version}"
    example = mlflow.artifacts.download_artifacts(f"{uri}/serving_input_example.json",
                                                   tracking_uri=server.tracking_uri())
    body = Path(example).read_bytes()
    local = mlflow.pyfunc.load_model(uri)
    expected = local.predict(local.input_example)["mouth"].tolist()
    # ... which is the Keras model's value on the example's mouth crop with its gender, clipped to 0..1
    from faceattr.data.regions import crop_region, load_rgb
    from faceattr.tasks import TASKS

    row = local.input_example.iloc[0]
    crop = crop_region(load_rgb(row["image"]), "mouth")[None].astype("float32")   # a binary column: bytes
    keras_model = local.unwrap_python_model().model
    raw = keras_model.predict_on_batch({"image": crop, "gender": np.array([[0.0, 1.0]], "float32")})
    assert row["gender"] == "female" and expected == pytest.approx(TASKS["regression"].scores(raw).tolist(), abs=1e-6)
    t = time.monotonic()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:   # port 0: the server binds a free port itself, read back from /proc
        serve = subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/mouth/Production",
                                  "--env-manager", "local", "-h", "127.0.0.1", "-p", "0"], env=env, cwd=tmp_path,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port = wait_for_port(serve, "mlflow models serve", timeout=300, log=log)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.loads(resp.read())
        timings["serve (start + 1 query)"] = round(time.monotonic() - t, 1)
        assert list(answer) == ["predictions"] and len(answer["predictions"]) == len(expected), answer
        assert all(list(row) == ["mouth", "faces", "error"] and row["error"] is None and row["faces"] is None
                   for row in answer["predictions"]), answer   # faces: a crop shows no searched face
        assert [row["mouth"] for row in answer["predictions"]] == pytest.approx(expected, abs=1e-6)
    finally:
        from faceattr.server import _kill_group

        _kill_group(serve.pid)
        serve.poll()
        assert not _group_pids({serve.pid})

    # artifacts are objects in the bucket, runs are rows in PostgreSQL
    keys = s3_keys(server)
    assert any(k.endswith("model.keras") for k in keys) and any(k.endswith("collapse_check.json") for k in keys)
    assert run.info.run_id in pg_run_ids(server)

    # no secret in the run's params, tags or artifacts
    cred = server.credentials()
    secrets = [cred["aws_secret_access_key"], cred["pg_password"]]
    logged = json.dumps({**run.data.params, **run.data.tags})
    art = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="",
                                                   dst_path=str(tmp_path / "art"), tracking_uri=server.tracking_uri()))
    blobs = [p.read_bytes() for p in art.rglob("*") if p.is_file()]
    for secret in secrets:
        assert secret not in logged
        assert not any(secret.encode() in b for b in blobs)
    for log in (server.dir / "logs").glob("*.log"):
        assert not any(s in log.read_text(errors="replace") for s in secrets), log
    print(f"\nintegration timings (s): {timings}")


def test_distributed_search_chief_and_two_workers_against_the_server(server, env, tmp_path):
    from test_tuning import run_chief_and_workers, tune_command

    from faceattr import tuning

    directory = tmp_path / "shared-tuner"
    cmd = tune_command("--tuner", "random", "--max-trials", "2", "--epochs", "1", "--repeats", "1",
                       "--directory", str(directory), model="mouth")
    t = time.monotonic()
    run_chief_and_workers(cmd, tmp_path, env)
    took = time.monotonic() - t
    c = client(server)
    exp = c.get_experiment_by_name("mouth").experiment_id
    state = json.loads((directory / tuning.STATE_FILE).read_text())   # the chief's parent run, shared
    (parent,) = c.search_runs([exp], f"tags.`{tuning.ROLE}` = 'search' and "
                                     f"tags.`{tuning.TUNING_DIR}` = '{directory.resolve()}'")
    assert parent.info.run_id == state["parent_run_id"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_completed"] == 2
    search_id = parent.data.tags[tuning.SEARCH_ID]
    runs = c.search_runs([exp], f"tags.`{tuning.SEARCH_ID}` = '{search_id}'")
    trials = [r for r in runs if r.data.tags.get(tuning.ROLE) == "trial"]
    assert sorted(r.data.tags[tuning.TRIAL_ID] for r in trials) == ["0", "1"]   # every trial once
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["faceattr.tuner_id"] in ("tuner0", "tuner1")   # the chief runs no trial
        assert epoch_series(c, run.info.run_id, "val_loss") == [0]
    (repeat,) = [r for r in runs if r.data.tags.get(tuning.ROLE) == "repeat"]
    assert repeat.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {parent.info.run_id, repeat.info.run_id} | {r.info.run_id for r in trials} <= pg_run_ids(server)
    print(f"\ndistributed search (chief + 2 workers, 2 trials, 1 repeat): {took:.1f} s")


def test_four_trainings_at_once_all_land_complete(server, env, tmp_path):
    c = client(server)
    exp = c.get_experiment_by_name("mouth")
    before = {r.info.run_id for r in c.search_runs([exp.experiment_id], max_results=10000)} if exp else set()
    models_before = sum(k.endswith("model.keras") for k in s3_keys(server))
    t = time.monotonic()
    procs = []
    try:
        for i in range(4):
            cwd = tmp_path / f"run{i}"
            cwd.mkdir()
            procs.append(subprocess.Popen([str(VENV_BIN / "faceattr"), "train", "mouth", "--epochs", "1",
                                           "--data.size", "100"], env={**env, "FACEATTR_OUTBOX": str(cwd / "outbox")},
                                          cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=540) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    took = time.monotonic() - t
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
        assert "registered=" in stdout and "unreachable" not in stderr, stderr[-3000:]
    exp = c.get_experiment_by_name("mouth").experiment_id
    new = [r for r in c.search_runs([exp], max_results=10000) if r.info.run_id not in before]
    assert len(new) == 4
    versions = {v.run_id: v for v in c.search_model_versions("name='mouth'", max_results=10000)}
    for run in new:
        assert run.info.status == "FINISHED"
        assert epoch_series(c, run.info.run_id) == [0] and epoch_series(c, run.info.run_id, "val_loss") == [0]
        assert {"val_mse", "baseline_ratio", "epochs_trained"} <= set(run.data.metrics)
        assert run.info.run_id in versions and versions[run.info.run_id].status == "READY"
    assert len({versions[r.info.run_id].version for r in new}) == 4
    assert {r.info.run_id for r in new} <= pg_run_ids(server)
    models_now = sum(k.endswith("model.keras") for k in s3_keys(server))
    assert models_now >= models_before + 4   # each run's model is an object in the bucket
    print(f"\n4 concurrent trainings: {took:.1f} s")


def logged_model_id(server, run) -> str:
    """The id of the model logged by `run` (MLflow 3 keeps logged models under models/<id>/ in the store)."""
    (model,) = client(server).search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    return model.model_id


def _sync_and_check(env, server, outbox: Path, cwd, epochs: int):
    out = faceattr(env, "sync", str(outbox), cwd=cwd)
    assert "registered=" in out.stdout, out.stdout
    done = json.loads((outbox / "synced.json").read_text())
    c = client(server)
    run = c.get_run(done["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["faceattr.synced_from"] == str(outbox)
    assert epoch_series(c, run.info.run_id) == list(range(epochs))
    assert epoch_series(c, run.info.run_id, "val_loss") == list(range(epochs))
    assert {"val_mse", "baseline_ratio", "epochs_trained"} <= set(run.data.metrics)
    assert "train.epochs" in run.data.params and run.data.tags["faceattr.experiment"] == "mouth"
    arts = {a.path for a in c.list_artifacts(run.info.run_id)} | {
        a.path for a in c.list_artifacts(run.info.run_id, "plots")}
    assert {"collapse_check.json", "plots/learning_curves.png"} <= arts
    assert c.get_model_version("mouth", done["registered"]).run_id == run.info.run_id
    assert faceattr(env, "sync", str(outbox), cwd=cwd, check=False).returncode == 2   # never twice
    return run


def _outbox_from(stderr: str) -> Path:
    line = next(l for l in stderr.splitlines() if "tracking server unreachable" in l)
    assert "upload with: faceattr sync" in line
    return Path(line.split("run kept in ")[1].split(";")[0])


# `faceattr train ...` that, once epoch 0's metrics are on the server, says so (a file) and waits for the
# test's go-ahead (another file): the test kills the server at a known point, however fast the machine.
GATED_TRAIN = """
import sys, time
from pathlib import Path
from faceattr import tracking
from faceattr.cli import main

gate = Path(sys.argv[1])
logged = tracking.EpochMetrics.on_epoch_end

def on_epoch_end(self, epoch, logs=None):
    logged(self, epoch, logs)
    if epoch == 0:
        (gate / "epoch0-logged").touch()
        deadline = time.monotonic() + 600
        while not (gate / "go").exists():
            if time.monotonic() > deadline:
                sys.exit("gated training: the test never said go")
            time.sleep(0.05)

tracking.EpochMetrics.on_epoch_end = on_epoch_end
sys.exit(main(sys.argv[2:]))
"""


def test_tracking_server_killed_mid_training_then_sync(server, env, tmp_path):
    c = client(server)
    before = {r.info.run_id for r in c.search_runs([c.get_experiment_by_name("mouth").experiment_id])} \
        if c.get_experiment_by_name("mouth") else set()
    gate = tmp_path / "gate"
    gate.mkdir()
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", GATED_TRAIN, str(gate), "train", "mouth", "--epochs", "3",
                             "--data.size", "100"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        try:
            deadline = time.monotonic() + 600   # only a guard against a hang: we wait for the event
            while not (gate / "epoch0-logged").exists():
                assert proc.poll() is None, f"training ended before epoch 0 was logged: {proc.stderr.read()[-3000:]}"
                assert time.monotonic() < deadline, "epoch 0 was never logged"
                time.sleep(0.1)
            (run,) = [r for r in c.search_runs([c.get_experiment_by_name("mouth").experiment_id])
                      if r.info.run_id not in before]
            assert epoch_series(c, run.info.run_id) == [0]      # epoch 0 reached the server before the kill
            server.stop(only=("mlflow",))
            assert not server.status()["mlflow"]["running"]
        finally:
            (gate / "go").touch()
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.start(only=("mlflow",))   # whatever happened, the next tests get their server back
    assert proc.returncode == 0, stderr[-3000:]
    outbox = _outbox_from(stderr)
    assert (outbox / "model" / "model.keras").is_file() and (outbox / "journal.jsonl").is_file()
    epochs = sum(1 for line in (outbox / "journal.jsonl").read_text().splitlines()
                 if json.loads(line).get("op") == "metrics" and json.loads(line).get("step") is not None)
    assert epochs == 3
    _sync_and_check(env, server, outbox, tmp_path, epochs)
    print(f"\nfault 1 (mlflow server killed after epoch 0 of {epochs}): train {time.monotonic() - t:.1f} s, synced")


def test_s3_down_at_model_logging_then_sync(server, env, tmp_path):
    server.stop(only=("s3",))
    t = time.monotonic()
    try:
        out = faceattr(env, "train", "mouth", "--epochs", "2", "--data.size", "100", cwd=tmp_path)
    finally:
        server.start(only=("s3",))
    took = time.monotonic() - t
    outbox = _outbox_from(out.stderr)
    assert (outbox / "model" / "model.keras").is_file()
    run = _sync_and_check(env, server, outbox, tmp_path, 2)
    # the synced run's own artifacts and its logged model are objects in the bucket now
    keys = s3_keys(server)
    assert any(run.info.run_id in k and k.endswith("collapse_check.json") for k in keys), keys
    model_id = logged_model_id(server, run)
    assert any(model_id in k and k.endswith("model.keras") for k in keys), (model_id, keys)
    print(f"\nfault 2 (S3 down at model logging): train {took:.1f} s, synced")


def test_postgres_restarted_between_runs(server, env, tmp_path):
    server.stop(only=("postgres",))
    assert not server.status()["postgres"]["running"]
    server.start(only=("postgres",))
    t = time.monotonic()
    out = faceattr(env, "train", "mouth", "--epochs", "1", "--data.size", "100", "--no-register", cwd=tmp_path)
    assert "unreachable" not in out.stderr
    c = client(server)
    run = c.search_runs([c.get_experiment_by_name("mouth").experiment_id], order_by=["start_time DESC"])[0]
    assert run.info.status == "FINISHED" and "val_mse" in run.data.metrics and run.info.run_id in pg_run_ids(server)
    print(f"\nfault 3 (PostgreSQL restarted): next run fine in {time.monotonic() - t:.1f} s")
