"""Shared fixtures: a real MLflow store in a temp dir (`mlflow_store`, named so it does not shadow
`faceattr.tracking`) and one synthetic-data cache per session. What tests import lives in tests/helpers.py."""

import os

import pytest

from helpers import store_in

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A fresh sqlite tracking store and artifact root in tmp_path, like a user's working directory."""
    yield from store_in(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def module_store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("module-store")


@pytest.fixture
def module_mlflow_store(module_store_dir, monkeypatch):
    """Like `mlflow_store`, in one store for the whole module (a fresh sqlite store costs ~1.5 s to create):
    for tests that each look only at their own runs and models."""
    yield from store_in(module_store_dir, monkeypatch)


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
