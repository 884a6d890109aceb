"""A run's own cost: a whole `faceattr train eyes` process against a plain Keras script (issue 22, item 10).

    .venv/bin/python benchmarks/run_cost.py [--pairs 3] [--epochs 10] [--data ../shared/data/eye-state]
                                            [--code before=DIR --code after=DIR]

Each side is its own process under `/usr/bin/time -v` (wall, CPU = user + system, peak RSS):
- faceattr: `python -m faceattr train eyes` on eye-state declared as in real_eval (region `eye`,
  `data.image_region=eye`): tracked, evaluated, views drawn, the model logged and registered, into a
  fresh SQLite tracking store;
- plain: this script's `--plain` mode: read labels.csv, decode and resize the crops, `model.fit` the
  same architecture (the same layers, the same parameter count, printed) for the same epochs on a
  90/10 split, print the validation loss. Nothing else.
Rounds are interleaved (each side once, in turn forwards and backwards) after one untimed warm-up of
each (the OS file cache and faceattr's cache are warm for every timed run), so load on a shared machine
falls on every side alike; the load average is printed per round. The fixed seconds inside the faceattr
runs (imports, data, fit, evaluation, views, logging the model, registration) are the run's own
`time_*` metrics (experiment.Timings), read back from the tracking store.
`--code LABEL=DIR` runs faceattr from that checkout (PYTHONPATH); given twice, a before and an after
are measured side by side in the same rounds.
Appends the figures, the machine and the command to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import REPO, SHARED, append_results, machine  # noqa: E402

# eye-state as faceattr/real_eval.py declares it: close-ups of one eye
EYE_STATE = ["--region=eye", "--data.image_region=eye"]
TIME_FIELDS = {"wall": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)",
               "user": r"User time \(seconds\): (\S+)", "system": r"System time \(seconds\): (\S+)",
               "rss": r"Maximum resident set size \(kbytes\): (\d+)"}


def plain(data: Path, epochs: int) -> None:
    """What a hand-written script does: decode, resize, build, fit. Imports only what it uses."""
    import keras
    import numpy as np
    import pandas as pd
    from keras import layers
    from PIL import Image

    height, width = 48, 48   # faceattr's region `eye` (data/regions.REGION_SIZES)
    frame = pd.read_csv(data / "labels.csv")
    images = np.stack([np.asarray(Image.open(data / p).convert("RGB").resize((width, height), Image.BILINEAR),
                                  np.float32) for p in frame["path"]])
    labels = frame["eyes"].to_numpy(np.float32)
    gender = np.full((len(frame), 2), 0.5, np.float32)   # unknown, as faceattr feeds it without a gender model
    order = np.random.default_rng(0).permutation(len(frame))
    val, train = order[: len(frame) // 10], order[len(frame) // 10:]
    keras.utils.set_random_seed(0)
    image, gender_in = keras.Input((height, width, 3), name="image"), keras.Input((2,), name="gender")
    x = layers.Rescaling(1 / 255.0)(image)
    for filters, padding, pool in [(32, "same", True), (48, "same", True), (64, "valid", True),
                                   (96, "same", False), (128, "same", False)]:   # experiments/eyes.yaml
        x = layers.Conv2D(filters, 3, padding=padding, activation="relu")(x)
        if pool:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(layers.Dropout(0.25)(x))
    x = layers.Dropout(0.25)(layers.Dense(320, activation="relu")(x))
    x = layers.Dense(120, activation="relu")(layers.Concatenate()([x, gender_in]))
    model = keras.Model({"image": image, "gender": gender_in}, layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit({"image": images[train], "gender": gender[train]}, labels[train], batch_size=32, epochs=epochs,
              validation_data=({"image": images[val], "gender": gender[val]}, labels[val]), verbose=0)
    loss = model.evaluate({"image": images[val], "gender": gender[val]}, labels[val], verbose=0)
    print(f"plain: {model.count_params():,} parameters, {len(train)} training photos, val_loss {loss:.4f}")


def timed(command: list[str], env: dict, cwd: Path) -> dict:
    """Run `command` under /usr/bin/time -v; its wall, CPU (s) and peak RSS (MiB), or an error with its output."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    found = {k: re.search(p, done.stderr).group(1) for k, p in TIME_FIELDS.items()}
    wall = sum(float(part) * 60 ** i for i, part in enumerate(reversed(found["wall"].split(":"))))
    return {"wall": wall, "cpu": float(found["user"]) + float(found["system"]), "rss": int(found["rss"]) / 1024,
            "out": done.stdout}


def phases(tracking_uri: str) -> dict[str, float]:
    """The newest training run's time_* metrics (empty for code that does not log them)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("eyes")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return {k: v for k, v in runs[0].data.metrics.items() if k.startswith("time_")} if runs else {}


def stat(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):7.2f} ± {sd:5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="rounds: each runs every side once")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", default=str(SHARED / "eye-state"))
    parser.add_argument("--code", action="append", metavar="[LABEL=]DIR",
                        help="a faceattr checkout to run (repeatable: a before and an after, interleaved in "
                             "the same rounds); default: this one")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)   # the plain side itself
    args = parser.parse_args()
    data = Path(args.data).resolve()
    if args.plain:
        plain(data, args.epochs)
        return
    if not (data / "labels.csv").is_file():
        raise SystemExit(f"no eye-state set at {data} (labels.csv)")
    checkouts = dict(c.split("=", 1) if "=" in c else ("faceattr", c) for c in (args.code or [str(REPO)]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        envs, sides = {}, {}
        for label, code in checkouts.items():   # a tracking store per checkout: phases() reads its newest run
            uri = f"sqlite:///{tmp / label / 'mlflow.db'}"
            (tmp / label).mkdir()
            envs[label] = {**os.environ, "MLFLOW_TRACKING_URI": uri, "FACEATTR_CACHE": str(tmp / "cache"),
                           "PYTHONPATH": str(Path(code).resolve()), "TF_CPP_MIN_LOG_LEVEL": "2"}
            sides[label] = [sys.executable, "-m", "faceattr", "train", "eyes", "--data", str(data),
                            "--epochs", str(args.epochs), "--train.verbose=0", *EYE_STATE]
        envs["plain"] = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        sides["plain"] = [sys.executable, str(Path(__file__).resolve()), "--plain", "--data", str(data),
                          "--epochs", str(args.epochs)]
        head = machine()
        print(head)
        for side, command in sides.items():   # warm-up, untimed
            timed(command, envs[side], tmp / side if side in checkouts else tmp)
        found = {side: [] for side in sides}
        inside = {label: [] for label in checkouts}
        lines = [head, *(f"{label}: faceattr from {Path(code).resolve()}" for label, code in checkouts.items())]
        for pair in range(args.pairs):
            order = list(sides) if pair % 2 == 0 else list(reversed(sides))
            load = os.getloadavg()[0]
            for side in order:
                found[side].append(timed(sides[side], envs[side], tmp / side if side in checkouts else tmp))
                if side in checkouts:
                    inside[side].append(phases(envs[side]["MLFLOW_TRACKING_URI"]))
            line = (f"round {pair + 1} (load {load:.1f}): " + ", ".join(
                f"{s} {found[s][-1]['wall']:.1f} s wall {found[s][-1]['cpu']:.1f} s CPU {found[s][-1]['rss']:.0f} MiB"
                for s in sides))
            print(line, flush=True)
            lines.append(line)
        lines.append(found["plain"][-1]["out"].strip().splitlines()[-1])
        for label in checkouts:
            for key, unit in (("wall", "s"), ("cpu", "s"), ("rss", "MiB")):
                mine, theirs = [r[key] for r in found[label]], [r[key] for r in found["plain"]]
                ratios = [a / b for a, b in zip(mine, theirs)]
                lines.append(f"{label:8s} {key:4s}: {stat(mine)} {unit} against plain {stat(theirs)} {unit}, "
                             f"ratio per round {stat(ratios)}")
            names = sorted(set().union(*inside[label]))
            if names:
                lines.append(f"{label:8s} inside the run (mean ± sd, s): " + ", ".join(
                    f"{n[5:]} {stat([p.get(n, float('nan')) for p in inside[label]]).strip()}" for n in names))
        for line in lines[-(4 * len(checkouts)):]:
            print(line)
    append_results("A run's own cost: faceattr train eyes vs plain Keras on eye-state", lines,
                   notes="Ratios are per interleaved round (faceattr / plain), mean ± sd over the rounds; the "
                         "machine is shared with other work (load printed per round).")


if __name__ == "__main__":
    main()
