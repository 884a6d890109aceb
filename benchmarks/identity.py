"""Identity benchmark: "is this person X?" from scratch (weights=none) with both backbones, on ORL faces
(../shared/data/orl-faces, 40 people x 10 grey photos; skipped when absent) and on synthetic persons
(20 x 10 colour photos): accuracy on new photos of seen people and on people never seen, and epoch times.

    .venv/bin/python benchmarks/identity.py [--epochs 10] [--sets orl,synthetic] [--backbones mobilenetv2,vgg16]

Short runs so the whole thing stays under ~15 minutes on 2 CPU cores: MobileNetV2 at input 96, VGG16 at
input 64 (its 14.7M-parameter conv stack costs ~20x MobileNetV2's per pixel), 10 epochs at most.
Appends a table with the machine and the exact command to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import SHARED, append_results, machine  # noqa: E402
INPUT = {"mobilenetv2": 96, "vgg16": 64}


def run_one(source: str, person: str | None, backbone: str, epochs: int) -> dict:
    import keras

    from faceattr import config, experiment, tracking

    overrides = {"data": source, "backbone": backbone, "weights": "none", "epochs": epochs,
                 "model.input_size": INPUT[backbone], "train.verbose": 0}
    if person:
        overrides["person"] = person
    cfg = config.load("identity", overrides)
    prepared = experiment.gather(cfg)
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    tracking.use_experiment("identity-benchmark")
    with tracking.start_run(f"{Path(source).name}-{backbone}") as run:
        out = experiment.fit_and_log(prepared, run, callbacks=[Timer()], log_model=False)
    train = prepared.splits["train"]
    return {**out.metrics, "times": times, "person": cfg["data"]["person"], "train_n": len(train),
            "positives": int(train.labels.sum()), "params": out.model.count_params()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sets", default="orl,synthetic")
    parser.add_argument("--backbones", default="mobilenetv2,vgg16")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    os.environ.setdefault("FACEATTR_CACHE", str(Path(tempfile.gettempdir()) / "faceattr-bench-cache"))
    sets = []
    for name in args.sets.split(","):
        if name == "orl":
            if (SHARED / "orl-faces" / "labels.csv").is_file():
                sets.append(("orl-faces", str(SHARED / "orl-faces"), "s7"))
            else:
                print(f"skip orl: {SHARED / 'orl-faces'} is not here")
        else:
            sets.append(("synthetic 20x10", "synthetic", None))
    head = machine()
    started = datetime.datetime.now()
    lines = [f"machine: {head}",
             f"{'data':16s} {'backbone':12s} {'in':>3s} {'person':7s} {'train(+)':>9s} {'epochs':>6s} "
             f"{'1st ep s':>8s} {'ep s':>6s} {'seen acc':>8s} {'unseen acc':>10s} {'val acc':>7s} "
             f"{'recall':>6s} {'auc':>5s} {'test seen':>9s} {'test unseen':>11s}"]
    print(lines[0], flush=True)
    for label, source, person in sets:
        for backbone in args.backbones.split(","):
            t0 = time.perf_counter()
            r = run_one(source, person, backbone, args.epochs)
            rest = r["times"][1:] or r["times"]
            line = (f"{label:16s} {backbone:12s} {INPUT[backbone]:3d} {r['person']:7s} "
                    f"{r['train_n']:5d}({r['positives']}) {int(r['epochs_trained']):6d} {r['times'][0]:8.1f} "
                    f"{sum(rest) / len(rest):6.1f} {r.get('seen_accuracy', float('nan')):8.3f} "
                    f"{r.get('unseen_accuracy', float('nan')):10.3f} {r.get('val_accuracy', float('nan')):7.3f} "
                    f"{r.get('val_recall', float('nan')):6.2f} {r.get('val_roc_auc', float('nan')):5.2f} "
                    f"{r.get('test_seen_accuracy', float('nan')):9.3f} {r.get('test_unseen_accuracy', float('nan')):11.3f}"
                    f"  ({time.perf_counter() - t0:.0f} s)")
            print(line, flush=True)
            lines.append(line)
    minutes = (datetime.datetime.now() - started).total_seconds() / 60
    append_results(f"identity.py ({minutes:.1f} min in all)", lines, notes=(
        "weights=none (from scratch), class weights, the seeds' augmentation; `seen acc` / `unseen acc`: "
        "validation+test photos of people seen in training (target included) / never seen; `ep s`: mean "
        "epoch after the first (the first includes tracing); `train(+)`: training photos (target's)."))


if __name__ == "__main__":
    main()
