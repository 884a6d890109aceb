"""Tuning efficiency: Hyperband against random search at the same trial budget, on eyes.

    .venv/bin/python benchmarks/tuning.py [--epochs 8] [--factor 3] [--size 2000] [--seeds 0]

Both searches run through `faceattr.tuning.tune` (nested MLflow trial runs, the same data and space)
with `max_epochs = --epochs`. Hyperband's trial count for one iteration (`hyperband_trials`) is the
budget random search gets as `max_trials`. Reported per search: trials, epochs trained in all trials
(early stopping may cut a random trial short too), search wall time (without the retrain of the best),
the best trial's val_mse, and that trial's widths. Appends to benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import append_results, machine  # noqa: E402


def run_search(kind: str, epochs: int, factor: int, size: int, seed: int, trials: int, workdir: Path) -> dict:
    import mlflow

    from faceattr import config as config_module
    from faceattr import tuning

    cfg = config_module.load("eyes", {"epochs": epochs, "seed": seed, "data.size": size, "train.verbose": 0})
    start = time.perf_counter()
    summary = tuning.tune(cfg, tuner=kind, max_trials=trials, factor=factor, repeats=1, fresh=True,
                          directory=str(workdir / f"{kind}-s{seed}"))
    wall = time.perf_counter() - start
    parent = mlflow.MlflowClient().get_run(summary["parent_run_id"])
    return {**summary, "wall_s": wall, "search_s": parent.data.metrics["search_seconds"],
            "widths": parent.data.params.get("best.widths", "?")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="max epochs of a trial")
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--seeds", default="0", help="comma-separated search seeds")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="faceattr-bench-tuning-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    from faceattr.tuning import hyperband_trials

    trials = hyperband_trials(args.epochs, args.factor)
    lines = [f"machine: {machine()}",
             f"eyes, {args.size} synthetic photos, max {args.epochs} epochs a trial, budget {trials} trials "
             f"(one Hyperband iteration, factor {args.factor})",
             f"{'search':10s} {'seed':>4s} {'trials':>6s} {'epochs':>6s} {'search s':>8s} {'best val_mse':>12s}  widths"]
    print("\n".join(lines), flush=True)
    for seed in map(int, args.seeds.split(",")):
        for kind in ("hyperband", "random"):
            r = run_search(kind, args.epochs, args.factor, args.size, seed, trials, workdir)
            lines.append(f"{kind:10s} {seed:4d} {r['trials']:6d} {r['epochs_total']:6d} {r['search_s']:8.0f} "
                         f"{r['best_val_mse']:12.4f}  {r['widths']}")
            print(lines[-1], flush=True)
    if not args.no_write:
        append_results("tuning.py", lines, notes=(
            "`epochs`: epochs trained over all trials (MLflow `epochs_trained` of each finished trial run); "
            "`search s`: the search alone (the parent run's `search_seconds`), without the one retrain of the "
            "best configuration that `tune` then registers."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
