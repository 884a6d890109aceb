"""The three attributes added as two files each (issue 27): smiling, glasses, age, over seeds.

    .venv/bin/python benchmarks/attributes.py [--experiments smiling,glasses,age] [--seeds 0,1,2] [--set KEY=VALUE ...]

Each experiment is trained with its shipped defaults (`faceattr train NAME --seed S`, registered in a
throwaway store unless MLFLOW_TRACKING_URI is set), then judged as its policy judges it: the test split
(people or photos no run trained on) and the held-out WHOLE photos sent through the served model
(promotion.judge_photos: detection, subject face, crop or descriptor, row errors). Prints per seed, then
mean ± sd over seeds with n and a 95% interval of the mean figure, and each figure per gender and pose
slice where the set has them; appends it all to benchmarks/RESULTS.md. Reads ../shared/data in place.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")

from benchmarks.common import append_results, machine, spread  # noqa: E402

SLICED = ("gender", "pose")   # the slices the issue asks for, where the set has them


def judge(name: str, seed: int, overrides: dict) -> dict:
    """Train one seed, register it, judge it on the test split and the held-out whole photos."""
    from faceattr import config, experiment, promotion, registry, tasks

    cfg = config.load(name, {"seed": seed, "train.verbose": 0, **overrides})
    outcome = experiment.train(cfg, register=True)
    task = tasks.of(cfg)
    key = task.accuracy_key if task.target.is_score else "mae"
    version = registry.get_version(name, outcome.version)
    photos = promotion.judge_photos(version, promotion.held_out_photos(promotion.eval_set(cfg, [version])), cfg)
    rows = [r for r in outcome.slices if r["split"] == "test" and r["column"] in SLICED]
    import mlflow

    n_test = int(mlflow.get_run(version.run_id).data.params["data.n_test"])
    return {"key": key, "test": outcome.metrics[f"test_{key}"], "n_test": n_test,
            "photos": photos.get("photos_accuracy" if task.target.is_score else "photos_mae", float("nan")),
            "n_photos": photos["photos_n"], "scored": photos["photos_scored_share"],
            "epochs": int(outcome.metrics["epochs_trained"]),
            "slices": {(r["column"], r["slice"]): (r[key], r["n"]) for r in rows}}


def interval(value: float, n: int, key: str) -> str:
    """A 95% interval of one figure: a share's normal interval; none for an MAE (its spread is its own)."""
    if key == "mae" or not n:
        return ""
    half = 1.96 * (value * (1 - value) / n) ** 0.5
    return f" (95% interval {value - half:.3f}-{value + half:.3f}, n={n})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="smiling,glasses,age")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE override for every run")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    lines = [machine()]
    for name in args.experiments.split(","):
        found = []
        for seed in map(int, args.seeds.split(",")):
            one = judge(name, seed, overrides)
            found.append(one)
            lines.append(f"{name} seed {seed}: test {one['key']} {one['test']:.4f}; held-out whole photos "
                         f"{'accuracy' if one['key'] != 'mae' else 'mae'} {one['photos']:.4f} (n={one['n_photos']}, "
                         f"answered {one['scored']:.3f}); {one['epochs']} epochs")
            print(lines[-1], flush=True)
        key, digits = found[0]["key"], 2 if found[0]["key"] == "mae" else 3
        tests, photos = [f["test"] for f in found], [f["photos"] for f in found]
        lines.append(f"{name}: test {key} {spread(tests, f'.{digits}f')}{interval(statistics.mean(tests), found[0]['n_test'], key)}; "
                     f"held-out whole photos {spread(photos, f'.{digits}f')}"
                     f"{interval(statistics.mean(photos), found[0]['n_photos'], key)} over {len(found)} seeds")
        for slice_key in sorted(found[0]["slices"]):
            values = [f["slices"][slice_key][0] for f in found if slice_key in f["slices"]]
            n = found[0]["slices"][slice_key][1]
            lines.append(f"  test {slice_key[0]}={slice_key[1]:12s} n={n:4d} {key} {spread(values, f'.{digits}f')}")
        print("\n".join(lines[-(len(found[0]['slices']) + 1):]), flush=True)
    print("\n".join(lines))
    if not args.no_write:
        append_results("New attributes: smiling, glasses, age (two files each)", lines)


if __name__ == "__main__":
    main()
