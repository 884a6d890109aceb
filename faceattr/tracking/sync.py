"""`faceattr sync OUTBOX`: replay a run kept in the local outbox (tracking/outbox.py) into a NEW run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from faceattr import names
from faceattr.errors import FaceattrError
from faceattr.tracking.outbox import JOURNAL, SYNCED, read_journal
from faceattr.tracking.packaging import kept_model, log_saved_model


def sync(path: str | Path, force: bool = False) -> dict:
    """Replay an outbox into a NEW run on the current tracking server; mark the outbox synced."""
    path = Path(path).expanduser()
    if not (path / JOURNAL).is_file():
        raise FaceattrError(f"{path} is not a faceattr outbox (no {JOURNAL})")
    if (path / SYNCED).is_file() and not force:
        done = json.loads((path / SYNCED).read_text())
        raise FaceattrError(f"{path} was already synced into run {done['run_id']} (--force to sync again)")
    entries = read_journal(path)
    start = entries[0]
    params: dict[str, str] = {}
    tags: dict[str, str] = dict(start.get("tags") or {})
    metrics: list[Metric] = []
    register, status = None, "FINISHED"
    for e in entries:
        if e["op"] == "params":
            params.update({k: str(v) for k, v in e["params"].items()})
        elif e["op"] == "tags":
            tags.update({k: str(v) for k, v in e["tags"].items()})
        elif e["op"] == "metrics":
            metrics += [Metric(k, float(v), int(e["timestamp"]), int(e.get("step") or 0))
                        for k, v in e["metrics"].items()]
        elif e["op"] == "register":
            register = e["name"]
        elif e["op"] == "end":
            status = e["status"]
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(start["experiment"])
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(start["experiment"])
    tags.update({MLFLOW_RUN_NAME: start["run_name"], names.SYNCED_FROM: str(path)})
    run = client.create_run(experiment_id, start_time=int(start["time"] * 1000),
                            tags=tags, run_name=start["run_name"])
    run_id = run.info.run_id
    items = list(params.items())
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
    for i in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[i:i + 500])
    artifacts = path / "artifacts"
    if artifacts.is_dir():
        client.log_artifacts(run_id, str(artifacts))
    version = model_uri = None
    if kept_model(path / "model"):
        with mlflow.start_run(run_id=run_id):
            info = log_saved_model(path / "model")
            model_uri = info.model_uri
        if register:
            version = mlflow.register_model(model_uri, register).version
    client.set_terminated(run_id, status, end_time=int(entries[-1]["time"] * 1000))
    result = {"run_id": run_id, "experiment": start["experiment"], "metrics": len(metrics),
              "params": len(params), "model_uri": model_uri, "registered": version, "time": time.time()}
    (path / SYNCED).write_text(json.dumps(result))
    return result
