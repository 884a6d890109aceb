"""The MLflow model registry: the champion of a registered model, and moving it safely.

Who is the champion is recorded twice: alias `champion` and stage `Production`. MLflow has no
compare-and-set and moves them in two calls, so faceattr fixes one order and one record of truth:

1. tags on the new version (the evidence, `faceattr.previous_champion`);
2. stage `Production` -> the new version, `archive_existing_versions=True` (the old one is archived);
3. alias `champion` -> the new version. This is the commit point: the alias is the record of truth.

A promotion that dies between 2 and 3 leaves the stage on the new version and the alias on the old
one; `repair` (run first by every promotion and rollback, under the same lock) moves `Production`
back to wherever `champion` points and archives every other Production version, so the half-done
promotion is rolled back, never half-kept. With no alias at all nothing is Production.

Every move runs under `promotion_lock(name)`: for a local sqlite or file store, a `fcntl.flock` file lock
in the machine's temp folder named after the store's real path (`store_lock_path`: every promoter of
that store on this machine finds it, and the user's working folder stays clean); `FACEATTR_PROMOTE_LOCK`
names another lock file (shared storage) or a `postgresql://` URL for a PostgreSQL advisory lock (see
`Lock` to plug in another kind).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import os
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException

from faceattr.errors import FaceattrError
from faceattr.names import PREVIOUS  # noqa: F401 (registry.PREVIOUS: the tag rollback follows)
from faceattr import names

CHAMPION = "champion"
PRODUCTION = "Production"
LOCK_ENV = "FACEATTR_PROMOTE_LOCK"
CRASH_ENV = "FACEATTR_TEST_CRASH_BETWEEN_MOVES"   # tests: os._exit() between the stage and the alias call
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class RegistryError(FaceattrError):
    """The registry is not in a state this command can work from (no such model, no version, ...)."""


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient()


def champion(name: str):
    """The ModelVersion holding alias `champion` of registered model `name`, or None if there is none."""
    try:
        return client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise


def registered_names() -> list[str]:
    """Every registered model's name."""
    return sorted(m.name for m in client().search_registered_models())


def versions(name: str) -> list:
    """Every version of registered model `name`, oldest first (RegistryError if the model is unknown)."""
    found = client().search_model_versions(f"name = '{name}'")
    if not found:
        raise RegistryError(f"no registered model {name!r} with any version: train it first "
                            f"(`faceattr train {name}` registers a version)")
    return sorted(found, key=lambda v: int(str(v.version)))


def get_version(name: str, version: str | int | None):
    """Version `version` of `name`, or the newest one when None."""
    if version in (None, "", "latest"):
        return versions(name)[-1]
    try:
        return client().get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"registered model {name!r} has no version {version}: {exc.message}") from None


def production(name: str) -> list:
    return [v for v in versions(name) if v.current_stage == PRODUCTION]


# --- the lock ---------------------------------------------------------------------------------

class Lock(contextlib.AbstractContextManager):
    """One promotion at a time per registered model. Subclass with `acquire()`/`release()`."""

    timeout_s = 600.0

    def __init__(self, name: str):
        self.name = name

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class FileLock(Lock):
    """`fcntl.flock` on a file: released by the kernel when the holder dies, so a crash never leaves it held."""

    def __init__(self, name: str, path: Path):
        super().__init__(name)
        self.path = Path(path)
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._fh.close()
                    raise RegistryError(f"another promotion of {self.name!r} has held {self.path} for "
                                        f"{self.timeout_s:.0f} s; try again later") from None
                time.sleep(0.05)

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class PostgresAdvisoryLock(Lock):
    """`pg_advisory_lock` on the tracking server's PostgreSQL database, held on one connection.

    Needs a URL that reaches the database itself; a plain `postgresql://` URL is driven by psycopg
    (v3, what faceattr installs), like MLflow's `postgresql+psycopg://` store URI.
    """

    def __init__(self, name: str, url: str):
        super().__init__(name)
        self.url = url
        self._conn = None

    def acquire(self) -> None:
        import sqlalchemy

        scheme, rest = self.url.split("://", 1)
        url = f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else self.url
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self._conn = engine.connect()
        key = f"faceattr-promote:{self.name}"
        # set_config, not SET: psycopg 3 binds parameters server-side and SET takes none
        self._conn.execute(sqlalchemy.text("SELECT set_config('lock_timeout', :ms, false)"),
                           {"ms": f"{int(self.timeout_s * 1000)}"})
        self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": key})

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()   # closing the session releases its advisory locks
            self._conn = None


def store_lock_path(store: Path, name: str) -> Path:
    """The lock file for promotions of `name` in the local store at `store`: in the temp folder, named by a
    hash of the store's resolved path, so two working folders reaching one store share it."""
    digest = hashlib.sha256(str(store.expanduser().resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "faceattr-locks" / f"{store.name}-{digest}.promote-{name}.lock"


def promotion_lock(name: str) -> Lock:
    """The lock for promotions of `name` on the current registry (see the module docstring)."""
    chosen = os.environ.get(LOCK_ENV)
    uri = chosen or mlflow.get_registry_uri()
    scheme = urlparse(uri).scheme
    if scheme.startswith("postgresql"):
        return PostgresAdvisoryLock(name, uri)
    if chosen:
        return FileLock(name, Path(chosen).expanduser())
    if scheme == "sqlite":
        return FileLock(name, store_lock_path(Path(unquote(uri[len("sqlite:///"):])), name))
    if scheme in ("", "file"):
        return FileLock(name, store_lock_path(Path(unquote(urlparse(uri).path)) if scheme else Path(uri), name))
    raise RegistryError(f"no promotion lock for registry {uri!r}: set {LOCK_ENV} to a lock file on storage "
                        f"every promoter shares, or to the postgresql:// URL of the server's database")


# --- moves (call these holding the lock) ------------------------------------------------------

def repair(name: str) -> list[str]:
    """Make stage Production agree with alias `champion` (the record of truth); return what was fixed."""
    fixed = []
    current = champion(name)
    in_production = production(name)
    if current is None:
        for v in in_production:
            _transition(name, str(v.version), "Archived")
            fixed.append(f"archived version {str(v.version)}: it was Production but no version holds alias "
                         f"{CHAMPION!r} (an interrupted first promotion)")
    elif [str(v.version) for v in in_production] != [str(current.version)]:
        _transition(name, str(current.version), PRODUCTION, archive_existing_versions=True)
        others = [str(v.version) for v in in_production if str(v.version) != str(current.version)]
        fixed.append(f"moved Production back to version {str(current.version)} (alias {CHAMPION!r}); "
                     f"archived {others or 'none'} (an interrupted promotion or rollback)")
    for note in fixed:
        client().set_model_version_tag(name, str(current.version) if current else in_production[0].version,
                                       names.REPAIRED, f"{now()} {note}")
    return fixed


def move_champion(name: str, version: str) -> None:
    """Stage first, alias last (the commit point); a crash in between is undone by `repair`."""
    _transition(name, str(version), PRODUCTION, archive_existing_versions=True)
    if os.environ.get(CRASH_ENV):
        os._exit(int(os.environ[CRASH_ENV]))
    client().set_registered_model_alias(name, CHAMPION, str(version))


def _transition(name: str, version: str, stage: str, archive_existing_versions: bool = False) -> None:
    with warnings.catch_warnings():   # stages are deprecated in MLflow 3 but are what `models:/NAME/Production` reads
        warnings.simplefilter("ignore", FutureWarning)
        try:
            client().transition_model_version_stage(name, str(version), stage,
                                                    archive_existing_versions=archive_existing_versions)
        except MlflowException as exc:
            # MLflow 3.17 on PostgreSQL with psycopg 3 compares model_versions.version (integer) with a
            # VARCHAR parameter when archiving and fails ("operator does not exist: integer <> character
            # varying") before changing anything: do the same in two calls (a crash in between leaves
            # two Production versions, which `repair` undoes like any interrupted move).
            if not archive_existing_versions or "operator does not exist" not in str(exc):
                raise
            others = [v for v in versions(name) if v.current_stage == stage and str(v.version) != str(version)]
            client().transition_model_version_stage(name, str(version), stage)
            for other in others:
                client().transition_model_version_stage(name, str(other.version), "Archived")


def model_file(version, path: str) -> Path | None:
    """A file of a version's logged model (e.g. `artifacts/record.json`), downloaded; None if it has none."""
    try:
        return Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}/{path}"))
    except (MlflowException, OSError):
        return None


def record(name: str, version: str, tags: dict[str, str], description: str | None = None) -> None:
    """Tags (and the description) on a version: the evidence of a decision."""
    for key, value in tags.items():
        client().set_model_version_tag(name, str(version), key, str(value))
    if description is not None:
        client().update_model_version(name, str(version), description=description)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container without /etc/passwd entry
        return str(os.getuid())
