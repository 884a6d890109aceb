"""Do the shipped defaults pass their own gates? (issue 29): `faceattr train NAME --seed S` then
`faceattr promote NAME --version V --dry-run`, as a user runs them, for each seed.

    .venv/bin/python benchmarks/gates.py [--experiment mouth-photo] [--seeds 0,1,2] [--store DIR]
                                         [--yaml PATH] [--no-write]

Each seed trains into one tracking store (`--store`, default a fresh temporary folder) and its version is
judged on its own (a dry run never makes a champion, so every version meets the thresholds alone). Prints
each seed's verdict, its reasons and its whole-photo figures (the promotion run's challenger_photos_*
metrics: held-out whole photos per set and per label side), then the pass count and each figure's
mean ± sd. `--yaml`: train a variant experiment file instead (registered under its own `name`).
Reads ../shared/data in place (research-only licences: nothing is copied into the repo).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import REPO, append_results, machine, spread  # noqa: E402

SHOWN = ("test_accuracy_at_0_5", "photos_accuracy", "photos_caught", "photos_false_alarms", "photos_scored_share")


def faceattr(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceattr", *args], cwd=env["STORE"], env=env,
                          capture_output=True, text=True)


def judged(store: str, version: str) -> tuple[str, str, dict]:
    """The dry-run promotion of `version`: its decision, reasons and challenger_* metrics."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"params.challenger_version = '{version}'")
    run = max(runs, key=lambda r: r.info.start_time)
    metrics = {k.removeprefix("challenger_"): v for k, v in run.data.metrics.items() if k.startswith("challenger_")}
    return run.data.tags["faceattr.decision"], run.data.tags["faceattr.reasons"], metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="mouth-photo")
    parser.add_argument("--yaml", help="a variant experiment file to train (registered under its name)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--store", help="tracking store folder (default: a fresh temporary one)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    store = args.store or tempfile.mkdtemp(prefix="faceattr-gates-")
    Path(store).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STORE": store, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
           "PYTHONPATH": str(REPO)}
    lines, found, passed = [machine(), f"store: {store}"], [], 0
    for seed in args.seeds.split(","):
        trained = faceattr("train", args.yaml or args.experiment, "--seed", seed, env=env)
        if trained.returncode:
            raise SystemExit(f"seed {seed}: train failed:\n{trained.stderr[-3000:]}")
        version = trained.stdout.split("registered=")[-1].split()[0]
        faceattr("promote", args.experiment, "--version", version, "--dry-run", env=env)
        decision, reasons, metrics = judged(store, version)
        passed += decision == "would-promote"
        found.append(metrics)
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in sorted(metrics) if k.startswith(SHOWN))
        lines.append(f"seed {seed}: version {version} {decision}; reasons: {reasons}; {shown}")
        print(lines[-1], flush=True)
    lines.append(f"{args.experiment}{' (' + args.yaml + ')' if args.yaml else ''}: passed {passed} of {len(found)} seeds")
    lines.append(f"  held-out whole photos, all sets: {found[0].get('photos_n', float('nan')):.0f}")
    for key in sorted({k for m in found for k in m if k.startswith(SHOWN)}):
        lines.append(f"  {key:48s} {spread([m[key] for m in found if key in m], '.4f')}")
    print("\n".join(lines))
    if not args.no_write:
        append_results(f"Shipped defaults against their gates: {args.experiment} (issue 29)", lines)


if __name__ == "__main__":
    main()
