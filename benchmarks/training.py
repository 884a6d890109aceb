"""Training overhead and input pipeline: faceattr against a plain Keras script, in one process.

    .venv/bin/python benchmarks/training.py [--models eyes,mouth,background,gender] [--epochs 4] [--rounds 2]

For each seed architecture, on the same 2,000 synthetic photos and the same epochs, three ways of
fitting the same model are alternated (A B C, then C B A, ...):
- faceattr: the full tracked run (`experiment.fit_and_log`: MLflow params, per-epoch metrics, the
  tf.data pipeline, LR-on-plateau and early stopping callbacks, evaluation, plots, the logged model);
- pipeline: `train.fit` alone (the tf.data pipeline and callbacks, no tracking);
- plain: `model.fit` on in-memory float32 NumPy arrays, no callbacks, no tracking (the seeds' way).
An epoch's time is the gap between consecutive `on_epoch_end` calls (the first epoch, which traces
the graph, is left out), so per-epoch logging counts. Ratios are of median epoch times:
faceattr / plain (issue 8's target <= 1.05) and pipeline / plain (<= 1.10). The photos are PNG
files on disk: `decode s` is the one-time decode and crop before the first epoch.
Appends the figures, the machine and the command to benchmarks/RESULTS.md.
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

from benchmarks.common import append_results, machine  # noqa: E402


def epoch_timer(times: list[float]):
    """A callback appending each epoch's wall time (end to end, so other callbacks' work counts)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now

    return EpochTimer()


def run_faceattr(prepared, times: list[float]) -> None:
    from faceattr import experiment, tracking

    with tracking.start_run(f"bench-{prepared.config['name']}") as run:
        experiment.fit_and_log(prepared, run, callbacks=[epoch_timer(times)])


def run_pipeline(prepared, times: list[float]) -> None:
    import keras

    from faceattr import models
    from faceattr.train import fit

    keras.utils.set_random_seed(prepared.config["train"]["seed"])
    fit(models.build(prepared.config), prepared.config, prepared.splits["train"], prepared.splits["val"],
        callbacks=[epoch_timer(times)])


def run_plain(prepared, times: list[float]) -> None:
    """What a hand-written script does: float32 arrays in memory, model.fit, nothing else."""
    import keras

    from faceattr import models, tasks
    from faceattr.data.tfdata import model_inputs
    from faceattr.train import compile_model

    config = prepared.config
    train, val = prepared.splits["train"], prepared.splits["val"]
    with_gender = tasks.of(config).reads_gender
    x, y = model_inputs(train, with_gender), train.labels
    x_val = model_inputs(val, with_gender)
    keras.utils.set_random_seed(config["train"]["seed"])
    model = compile_model(models.build(config), tasks.of(config), config["train"]["learning_rate"])
    model.fit(x, y, validation_data=(x_val, val.labels), batch_size=config["train"]["batch_size"],
              epochs=config["train"]["epochs"], shuffle=True, verbose=0, callbacks=[epoch_timer(times)])


RUNNERS = {"faceattr": run_faceattr, "pipeline": run_pipeline, "plain": run_plain}


def bench_model(name: str, epochs: int, rounds: int) -> str:
    import keras

    from faceattr import config as config_module
    from faceattr import experiment, tracking

    # the same epochs for every run: early stopping may not cut one short
    cfg = config_module.load(name, {"epochs": epochs, "train.early_stopping_patience": epochs + 1,
                                    "train.verbose": 0})
    start = time.perf_counter()
    prepared = experiment.gather(cfg)
    decode = time.perf_counter() - start
    tracking.use_experiment("benchmark-training")
    epoch_times: dict[str, list[float]] = {mode: [] for mode in RUNNERS}
    order = list(RUNNERS)
    for r in range(rounds):
        for mode in (order if r % 2 == 0 else order[::-1]):
            keras.backend.clear_session()
            times: list[float] = []
            RUNNERS[mode](prepared, times)
            epoch_times[mode] += times[1:]      # the first epoch traces the graph
            print(f"  {name} round {r + 1} {mode:8s} epochs {' '.join(f'{t:.2f}' for t in times)}", flush=True)
    med = {mode: statistics.median(t) for mode, t in epoch_times.items()}
    best = {mode: min(t) for mode, t in epoch_times.items()}
    n_train = len(prepared.splits["train"])
    line = (f"{name:10s} {n_train:5d} {decode:8.1f} {med['plain']:8.2f} {med['pipeline']:8.2f} {med['faceattr']:8.2f} "
            f"{med['faceattr'] / med['plain']:15.3f} {med['pipeline'] / med['plain']:15.3f} "
            f"{best['faceattr'] / best['plain']:9.3f} {best['pipeline'] / best['plain']:9.3f} "
            f"{n_train / med['faceattr']:10.0f}")
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="eyes,mouth,background,gender")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="faceattr-bench-")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
    lines = [f"machine: {machine()}",
             f"epochs {args.epochs} per run (first left out), {args.rounds} rounds alternating, median epoch s",
             f"{'model':10s} {'train':>5s} {'decode s':>8s} {'plain':>8s} {'pipeline':>8s} {'faceattr':>8s} "
             f"{'faceattr/plain':>15s} {'pipeline/plain':>15s} {'min f/p':>9s} {'min p/p':>9s} {'photos/s':>10s}"]
    print("\n".join(lines), flush=True)
    for name in args.models.split(","):
        line = bench_model(name, args.epochs, args.rounds)
        lines.append(line)
        print(line, flush=True)
    if not args.no_write:
        append_results("training.py", lines, notes=(
            "plain: `model.fit` on in-memory float32 arrays, no callbacks or tracking; pipeline: faceattr's "
            "tf.data pipeline and callbacks without tracking; faceattr: the full tracked run. Targets: "
            "faceattr/plain <= 1.05, pipeline/plain <= 1.10 (of medians); `min f/p`, `min p/p`: the same ratios of "
            "the fastest epoch of each way, less sensitive to the shared machine's stalls. `decode s`: the one-time "
            "PNG decode and crop "
            "of all 2,000 photos from disk before training; `photos/s`: training photos per second of a "
            "faceattr epoch (training plus validation)."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
