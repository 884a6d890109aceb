"""The local outbox: a training run that outlives its tracking server.

With a remote tracking URI (http/https), `faceattr train` records every param, metric (with its
step and timestamp), tag and small artifact in a run journal, `journal.jsonl` in
`$FACEATTR_OUTBOX/<uuid>/` (default `$FACEATTR_CACHE/outbox/` or `~/.cache/faceattr/outbox/`), as
well as sending it to MLflow. The first MLflow call that fails (server gone, S3 gone: an
MlflowException, a requests/boto error) is reported once; from then on nothing more is sent, the
model is saved into the outbox instead of being uploaded, and training carries on. At the end the
user is told where the run is and that `faceattr sync DIR` uploads it, as one NEW run with every
param, per-epoch metric, tag and artifact, and the model (registered, if the run would have).

A run that had no failure deletes its outbox at the end: the happy path costs one small JSONL
file and two PNGs written locally.

Failures must be detected in seconds, not minutes: MLflow's HTTP client retries 7 times with
exponential back-off (minutes) by default, so `faceattr train` sets MLFLOW_HTTP_REQUEST_MAX_RETRIES=2,
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1 and MLFLOW_HTTP_REQUEST_TIMEOUT=60 unless they are already set.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import mlflow

from faceattr.data.cache import cache_root

HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
JOURNAL = "journal.jsonl"
SYNCED = "synced.json"


def http_defaults() -> None:
    """Short HTTP retries for this process (see the module docstring), unless the user set them."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def root() -> Path:
    if os.environ.get("FACEATTR_OUTBOX"):
        return Path(os.environ["FACEATTR_OUTBOX"]).expanduser()
    return cache_root() / "outbox"


def remote_tracking() -> bool:
    return mlflow.get_tracking_uri().split(":", 1)[0] in ("http", "https")


def transport_error(exc: BaseException) -> bool:
    """An error of the tracking server or the artifact store, not of our code."""
    from mlflow.exceptions import MlflowException

    kinds: list[type] = [MlflowException, ConnectionError, TimeoutError]
    try:
        import requests

        kinds.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    try:
        import botocore.exceptions

        kinds += [botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError]
    except ImportError:
        pass
    return isinstance(exc, tuple(kinds))


class Recorder:
    """Journals every tracking call of one run; after the first failed call, only journals."""

    def __init__(self):
        self.dir: Path | None = None
        self.failed: str | None = None

    @property
    def active(self) -> bool:
        return self.dir is not None

    def begin(self, experiment: str, run_name: str, tags: dict) -> Path:
        http_defaults()
        self.dir = root() / uuid.uuid4().hex
        self.dir.mkdir(parents=True)
        self.failed = None
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment
        self.write({"op": "start", "experiment": experiment, "run_name": run_name, "tags": tags,
                    "tracking_uri": mlflow.get_tracking_uri(), "time": time.time()})
        return self.dir

    def write(self, entry: dict) -> None:
        if self.dir is None:
            return
        with open(self.dir / JOURNAL, "a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")

    def call(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs) unless a call already failed; a transport error switches to offline."""
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not self.active or not transport_error(exc):
                raise
            self.failed = f"{what}: {type(exc).__name__}: {str(exc)[:300]}"
            self.write({"op": "failed", "what": what, "error": self.failed, "time": time.time()})
            print(f"faceattr: warning: tracking failed ({self.failed}); training goes on and the run is "
                  f"kept in {self.dir}", file=sys.stderr)
            return None

    def artifact_path(self, path: str) -> Path:
        out = self.dir / "artifacts" / path
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def finish(self, ok: bool) -> Path | None:
        """End of the run: the outbox dir to sync (something failed), else None (and it is deleted)."""
        done, self.dir = self.dir, None
        if done is None:
            return None
        with open(done / JOURNAL, "a") as fh:
            fh.write(json.dumps({"op": "end", "status": "FINISHED" if ok else "FAILED", "time": time.time()}) + "\n")
        if self.failed:
            return done
        shutil.rmtree(done, ignore_errors=True)
        return None




# --- sync -------------------------------------------------------------------------------------

def read_journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / JOURNAL).read_text().splitlines() if line.strip()]
