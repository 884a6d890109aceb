"""Real-data benchmark: prepare throughput (utkface-gender) and held-out figures on the real sets.

    .venv/bin/python benchmarks/real_data.py [--part prepare|evaluate|all] [--sets a,b] [--split content,phash]

Prints its figures and appends them, with the machine and the exact command, to benchmarks/RESULTS.md.
Reads ../shared/data in place (research-only licences: nothing is copied into the repo).
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

from benchmarks.common import SHARED, append_results, machine  # noqa: E402


def bench_prepare(workers: int) -> list[str]:
    from faceattr.data.prepare import prepare

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in ("first run (empty cache)", "second run (cached)"):
            start = time.perf_counter()
            r = prepare(SHARED / "utkface-gender", Path(tmp) / f"out{len(lines)}", cache_dir=Path(tmp) / "cache",
                        workers=workers, progress=False)
            dt = time.perf_counter() - start
            lines.append(f"prepare utkface-gender workers={workers} {run}: {r.total} photos in {dt:.1f} s = "
                         f"{r.total / dt:.1f} photos/s; ok {r.ok}, failures {r.counts()}")
            print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="all", choices=("prepare", "evaluate", "all"))
    parser.add_argument("--sets", default="eye-state,yawn-mouth,utkface-gender")
    parser.add_argument("--split", default="content,phash")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--seeds", default="0", help="training seeds; several give the mean and spread of accuracy")
    args = parser.parse_args()
    if not (SHARED / "utkface-gender" / "labels.csv").is_file():
        print(f"{SHARED} is not here; nothing to benchmark")
        return 0
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    lines = [f"machine: {machine()}"]
    if args.part in ("prepare", "all"):
        for w in args.workers.split(","):
            lines += bench_prepare(int(w))
    if args.part in ("evaluate", "all"):
        from faceattr.real_eval import evaluate_set, format_row

        seeds = [int(x) for x in args.seeds.split(",")]
        for name in args.sets.split(","):
            for split in args.split.split(","):
                accuracies = []
                for seed in seeds:
                    start = time.perf_counter()
                    row = evaluate_set(name, split, epochs=args.epochs, overrides={"seed": seed})
                    accuracies.append(row["accuracy"])
                    lines.append(f"{format_row(row)} seed={seed} ({time.perf_counter() - start:.0f} s)")
                    print(lines[-1], flush=True)
                if len(seeds) > 1:
                    lines.append(f"{name:15s} split={split:7s} accuracy over seeds {args.seeds}: mean "
                                 f"{statistics.mean(accuracies):.4f}, sd {statistics.stdev(accuracies):.4f}, "
                                 f"min {min(accuracies):.4f}, max {max(accuracies):.4f}")
                    print(lines[-1], flush=True)
    append_results("real_data.py", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
