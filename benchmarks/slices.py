"""Who a model fails and what a regression reads: the run views' figures on real and synthetic data.

    .venv/bin/python benchmarks/slices.py [--part gender|weights|all] [--seed 0] [--epochs N]

- gender: the dlib-resnet gender head on ../shared/data/utkface-gender (`faceattr train gender
  --data ../shared/data/utkface-gender -P model.backbone=dlib-resnet`, faces read as face crops), with
  `evaluation.slices: {age: [18, 30, 45, 60], race: null}`: accuracy per gender, age band and race on
  validation and test, with each slice's photo count (slices under evaluation.min_slice are not gated).
- weights: eyes, mouth and background on the synthetic default data: the gender-input weight
  (`gender_weight_swap`, `gender_weight_unknown`), the photo weight (`photo_weight_shuffle`), the tag
  `leans_on_gender`, next to baseline_ratio.

Each model is trained by `experiment.train` (not registered) into a throwaway sqlite store unless
MLFLOW_TRACKING_URI is set. Prints the figures and appends them, with the machine and the command, to
benchmarks/RESULTS.md. Reads ../shared/data in place (research-only licence: nothing is copied).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")

from benchmarks.common import SHARED, append_results, machine  # noqa: E402

AGE_BANDS = [18, 30, 45, 60]     # UTKFace's sample holds adults (18 and over)


def train(name: str, overrides: dict):
    from faceattr import config, experiment

    return experiment.train(config.load(name, {"train.verbose": 0, **overrides}), register=False)


def bench_gender(seed: int, epochs: int | None) -> list[str]:
    source = SHARED / "utkface-gender"
    if not (source / "labels.csv").is_file():
        return [f"gender: skipped, {source} is missing"]
    overrides = {"data": str(source), "data.image_region": "face", "model.backbone": "dlib-resnet", "seed": seed,
                 "evaluation.slices": {"age": AGE_BANDS, "race": None}}
    if epochs:
        overrides["epochs"] = epochs
    outcome = train("gender", overrides)
    lines = [f"gender, utkface-gender, dlib-resnet head, seed {seed}: val accuracy {outcome.metrics['val_accuracy']:.3f}, "
             f"test accuracy {outcome.metrics['test_accuracy']:.3f}"]
    for split in ("val", "test"):
        for row in (r for r in outcome.slices if r["split"] == split):
            gate = "" if row["gated"] else "  (not gated: under evaluation.min_slice)"
            lines.append(f"  {split:4s} {row['column']:6s} {row['slice']:9s} n={row['n']:3d} "
                         f"accuracy={row['accuracy']:.3f}{gate}")
    return lines


def bench_weights(seed: int, epochs: int | None) -> list[str]:
    lines = []
    for name in ("eyes", "mouth", "background"):
        outcome = train(name, {"seed": seed, **({"epochs": epochs} if epochs else {})})
        m = outcome.metrics
        lines.append(f"{name:10s} synthetic default, seed {seed}: baseline_ratio {m['baseline_ratio']:.2f}, "
                     f"gender_weight_swap {m['gender_weight_swap']:.4f}, gender_weight_unknown "
                     f"{m['gender_weight_unknown']:.4f}, photo_weight_shuffle {m['photo_weight_shuffle']:.4f}, "
                     f"leans_on_gender={outcome.tags['leans_on_gender']} ({int(m['epochs_trained'])} epochs)")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("gender", "weights", "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: each experiment's own")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    lines = [machine()]
    if args.part in ("gender", "all"):
        lines += bench_gender(args.seed, args.epochs)
        print("\n".join(lines), flush=True)
    if args.part in ("weights", "all"):
        lines += bench_weights(args.seed, args.epochs)
    print("\n".join(lines))
    if not args.no_write:
        append_results("Slices and gender-input weight", lines)


if __name__ == "__main__":
    main()
