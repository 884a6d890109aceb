"""What the run views (faceattr/views.py: slices, gender-input weight, error gallery, plots) add to a run.

    .venv/bin/python benchmarks/run_views.py [--experiment eyes] [--rounds 3] [--epochs N]
        [--arms none,on[,gallery 0]]

`faceattr train eyes` on the synthetic default data, tracked into a throwaway sqlite store, in arms
alternated round by round: `none` (views.show skipped: no slices, weights, gallery or plots, not even
the two plots runs had before), `on` (the defaults: gender slices, a 16-photo gallery) and, if asked,
`gallery 0` (evaluation.gallery: 0).
Prints the mean wall time of each arm and, within the `on` runs, the seconds spent in views.show
itself: the second figure is the one to trust on a busy machine, since whole-run times vary by more
than the views cost. Appends them, with the machine and the command, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")

from benchmarks.common import append_results, machine  # noqa: E402

ARMS = {"none": {}, "gallery 0": {"evaluation.gallery": 0}, "on": {}}


def one_run(name: str, arm: str, overrides: dict, in_views: list[float]) -> tuple[float, int]:
    """One `faceattr train` (not registered): wall seconds and epochs trained."""
    from faceattr import config, experiment, views

    show = views.show

    def timed(*args, **kwargs):
        start = time.perf_counter()
        shown = show(*args, **kwargs)
        in_views.append(time.perf_counter() - start)
        return shown

    views.show = (lambda *a, **k: ([], {}, {})) if arm == "none" else timed
    try:
        start = time.perf_counter()
        outcome = experiment.train(config.load(name, {"train.verbose": 0, **overrides, **ARMS[arm]}), register=False)
        return time.perf_counter() - start, int(outcome.metrics["epochs_trained"])
    finally:
        views.show = show


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="eyes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: the experiment's own")
    parser.add_argument("--arms", default="none,on", help=f"of: {', '.join(ARMS)}")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    arms = args.arms.split(",")
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    header = machine()
    walls = {arm: [] for arm in arms}
    epochs = {arm: [] for arm in arms}
    in_views = {arm: [] for arm in arms}
    for r in range(args.rounds):
        for arm in arms:
            wall, trained = one_run(args.experiment, arm, overrides, in_views[arm])
            walls[arm].append(wall)
            epochs[arm].append(trained)
            print(f"round {r} {arm:9s} {wall:6.1f} s, {trained} epochs", flush=True)
    lines = [header]
    base = statistics.mean(walls["none"])
    for arm in arms:
        mean = statistics.mean(walls[arm])
        lines.append(f"{args.experiment} {arm:9s}: mean {mean:6.1f} s over {len(walls[arm])} runs "
                     f"({', '.join(f'{w:.1f}' for w in walls[arm])}; epochs {epochs[arm]}), "
                     f"{100 * (mean / base - 1):+.1f}% vs none")
    for arm in (a for a in arms if a != "none"):
        share = [v / w for v, w in zip(in_views[arm], walls[arm])]
        lines.append(f"{args.experiment} {arm:9s}: views.show {statistics.mean(in_views[arm]):.2f} s per run = "
                     f"{100 * statistics.mean(share):.1f}% of the run's wall time")
    print("\n".join(lines))
    if not args.no_write:
        append_results("Run views: what slices, gender weight, gallery and plots add to a run", lines,
                       "Whole-run means differ by early stopping (epochs trained) and by the other work on a "
                       "shared machine; the views.show share is measured inside the same runs.")


if __name__ == "__main__":
    main()
