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


# The fast tier runs on both cores (`-n 2 --dist loadfile --no-loadscope-reorder`): each file goes whole
# to the worker that is free, in collection order. The longest files go first and the short ones fill
# in at the end; xdist's own order (most tests first) left one worker ~20 s behind the other.
LONGEST_FIRST = ("test_smoke.py", "test_bundle.py", "test_spark.py", "test_serving.py", "test_batch.py",
                 "test_face_descriptor.py", "test_tuning.py", "test_cli.py", "test_run_checks.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
