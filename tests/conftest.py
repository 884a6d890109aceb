"""Shared fixtures: a real MLflow store in a temp dir, small synthetic data sets, ../shared/data."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A fresh sqlite tracking store and artifact root in tmp_path, like a user's working directory."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory):
    """One synthetic-data cache for the whole session (FACEATTR_CACHE), so each size is drawn once."""
    path = tmp_path_factory.mktemp("faceattr-cache")
    old = os.environ.get("FACEATTR_CACHE")
    os.environ["FACEATTR_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FACEATTR_CACHE", None)
    else:
        os.environ["FACEATTR_CACHE"] = old


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test cleanly when it is absent."""
    path = SHARED_DATA / name
    if not (path / "labels.csv").is_file():
        pytest.skip(f"{path} is not here (real data sets live beside the repo, never in it)")
    return path


def subprocess_env(tmp_path: Path, **extra) -> dict:
    """The environment for a child `mlflow run` / `faceattr` process: a fresh sqlite store in tmp_path,
    the venv's bin/ first on PATH (mlflow starts uvicorn and python from it), and no MLflow run or
    experiment inherited from this process."""
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env
