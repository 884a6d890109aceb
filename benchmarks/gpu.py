"""GPU training: the background CNN (faceattr/models, pure Keras 3) under JAX or PyTorch, no TensorFlow.

    KERAS_BACKEND=jax python benchmarks/gpu.py [--epochs 40] [--size 2000] [--batch-sizes 32,256]

Generates the default synthetic photos (faceattr.data.synthetic), cuts the 120x120 photo region with
the same crop code as training (faceattr.data.regions), and fits the model the experiment YAML
describes on in-memory arrays for a fixed number of epochs (no early stopping), in float32 and in
mixed precision (float16 compute, float32 weights). Reports the time to a trained model (compile and
first epoch included), images per second over the epochs after the first, and the final val_mse.
Runs where TensorFlow is absent (the lent GPU machine): carry keras, namex and optree as wheels.
Appends the figures and the machine to benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "jax")

from benchmarks.common import append_results, machine  # noqa: E402


def load_arrays(size: int, region: str, target: str):
    """(images uint8 (N, H, W, 3), gender one-hot (N, 2), labels (N,)) of fresh synthetic photos."""
    import numpy as np
    import pandas as pd

    from faceattr.data.regions import crop_region, load_rgb
    from faceattr.data.synthetic import default_dataset

    csv_path = default_dataset(size=size)   # generated once, cached under FACEATTR_CACHE
    frame = pd.read_csv(csv_path)
    images = np.stack([crop_region(load_rgb(str(csv_path.parent / p)), region) for p in frame["path"]])
    gender = np.eye(2, dtype=np.float32)[(frame["gender"] == "female").to_numpy(int)]
    return images, gender, frame[target].to_numpy(np.float32)


def fit_once(config: dict, data, batch_size: int, epochs: int, mixed: bool) -> dict:
    import keras
    import numpy as np

    from faceattr import models, tasks
    from faceattr.train import compile_model

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    images, gender, labels = data
    n_val = len(labels) // 10
    x = {"image": images[n_val:].astype(np.float32), "gender": gender[n_val:]}
    x_val = {"image": images[:n_val].astype(np.float32), "gender": gender[:n_val]}
    ends: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    start = time.perf_counter()
    model = compile_model(models.build(config), tasks.of(config), config["train"]["learning_rate"])
    history = model.fit(x, labels[n_val:], validation_data=(x_val, labels[:n_val]), batch_size=batch_size,
                        epochs=epochs, verbose=0, callbacks=[Timer()])
    total = time.perf_counter() - start
    epoch_s = statistics.median(np.diff(ends)) if len(ends) > 1 else total
    keras.mixed_precision.set_global_policy("float32")
    return {"total_s": total, "first_s": ends[0] - start, "epoch_s": epoch_s,
            "images_per_s": (len(labels) - n_val) / epoch_s, "val_mse": history.history["val_loss"][-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="background")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import keras

    from faceattr import config as config_module

    config = config_module.load(args.model)
    start = time.perf_counter()
    data = load_arrays(args.size, config["region"], config["target"])
    lines = [f"machine: {machine(framework='keras')}",
             f"{args.model}, {args.size} synthetic photos (90% train), {args.epochs} epochs; data made and cut "
             f"in {time.perf_counter() - start:.0f} s",
             f"{'backend':8s} {'batch':>5s} {'precision':10s} {'total s':>8s} {'1st ep s':>8s} {'ep s':>7s} "
             f"{'images/s':>9s} {'val_mse':>8s}"]
    print("\n".join(lines), flush=True)
    for batch_size in map(int, args.batch_sizes.split(",")):
        for mixed in (False, True):
            r = fit_once(config, data, batch_size, args.epochs, mixed)
            lines.append(f"{keras.backend.backend():8s} {batch_size:5d} {'mixed16' if mixed else 'float32':10s} "
                         f"{r['total_s']:8.1f} {r['first_s']:8.1f} {r['epoch_s']:7.3f} {r['images_per_s']:9.0f} "
                         f"{r['val_mse']:8.4f}")
            print(lines[-1], flush=True)
    if not args.no_write:
        append_results("gpu.py", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
