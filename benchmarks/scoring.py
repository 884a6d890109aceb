"""Batch scoring speed (issue 21): whole photos through an `eye` model that bundles a `dlib-resnet` gender
model, the same photos through four engines in one run, and face descriptors with 1 and 2 workers.

    .venv/bin/python benchmarks/scoring.py --before /tmp/before [--photos 1131] [--epochs 3]

- today's path: `faceattr predict` of the commit before the change, run from a git worktree of it
  (`git worktree add --detach /tmp/before a8b71b6`): one process, photo after photo;
- the new one-machine path: `faceattr predict --workers <cores> --profile` (worker processes);
- Spark `local[1]` and `local[2]`: `faceattr predict --engine spark` in a fresh process each. The first
  `--warm` photos are a job of their own, so Spark's fixed start-up (the JVM, a model load per worker)
  is told apart from its steady rate on the rest: steady = rest / its time; fixed = session start + the
  first job - warm / steady; the wall time is everything, start-up included;
- face descriptors of `--descriptors` whole faces into empty caches with 1 and 2 workers.

The models are made here through faceattr's own train path (a temporary tracking store): a gender
model with the `dlib-resnet` backbone on `--gender-photos` UTKFace faces, an `eye` model on eye-state's
close-ups (`--epochs`), logged together as one served model. Peak memory per worker: the largest
VmHWM (the kernel's peak resident set) among each engine's worker processes, sampled from /proc.
Prints its figures and appends them to benchmarks/RESULTS.md with the machine line and the load average.
Reads ../shared/data in place.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
STORE = tempfile.mkdtemp(prefix="faceattr-scoring-")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{STORE}/mlflow.db")

from benchmarks.common import REPO, SCRIPT, SHARED, append_results, machine  # noqa: E402

FACES = SHARED / "utkface-gender"


# --- the models ------------------------------------------------------------------------------------

def served_model(gender_photos: int, epochs: int, before: str) -> tuple[str, str]:
    """An eye model bundling a dlib-resnet gender model, both trained here: the logged model's URI, and
    the URI of the same Keras models logged by the code before the change (which reads only its own
    format) for today's path."""
    import numpy as np
    import pandas as pd

    from faceattr import config, experiment, serving, tracking
    from faceattr.serving import image_bytes

    labels = pd.read_csv(FACES / "labels.csv").head(gender_photos)
    labels["path"] = [str(FACES / p) for p in labels["path"]]
    labels.to_csv(Path(STORE) / "gender.csv", index=False)
    gender_cfg = config.load("gender", {"data": str(Path(STORE) / "gender.csv"), "data.image_region": "face",
                                        "model.backbone": "dlib-resnet", "epochs": epochs, "train.verbose": 0})
    gender = serving.load(experiment.train(gender_cfg, register=False).model_uri)
    eye_cfg = config.load("eyes", {"data": str(SHARED / "eye-state"), "region": "eye", "data.image_region": "eye",
                                   "epochs": epochs, "train.verbose": 0})
    eye = serving.load(experiment.train(eye_cfg, register=False).model_uri)
    example = pd.DataFrame([{"image": image_bytes(np.zeros((48, 48, 3), np.uint8)), "kind": "crop"}])
    made_by = eye.record.crops.made_by if eye.record.crops else None
    tracking.use_experiment("benchmark-scoring")
    with tracking.start_run("eye+gender") as run:
        uri = run.log_model(eye.model, eye_cfg, example, gender_model=gender.model, made_by=made_by).model_uri
    eye.model.save(Path(STORE) / "eye.keras")
    gender.model.save(Path(STORE) / "gender.keras")
    overrides = {"region": "eye", "data.image_region": "eye"}
    _, printed = timed_command([sys.executable, "-c", OLD_LOGGER, STORE, json.dumps(overrides), str(made_by)],
                               {"PYTHONPATH": str(Path(before).resolve())})
    return uri, printed.strip().splitlines()[-1]


OLD_LOGGER = """
import json, sys
import keras, numpy as np, pandas as pd
from faceattr import config, tracking
from faceattr.serving import encode_image
store, overrides, made_by = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
cfg = config.load("eyes", overrides)
example = pd.DataFrame([{"image": encode_image(np.zeros((48, 48, 3), np.uint8)), "kind": "crop"}])
tracking.use_experiment("benchmark-scoring")
with tracking.start_run("eye+gender, as logged before the change") as run:
    info = run.log_model(keras.models.load_model(store + "/eye.keras", compile=False), cfg, example,
                         gender_model=keras.models.load_model(store + "/gender.keras", compile=False),
                         made_by=None if made_by == "None" else made_by)
print(info.model_uri)
"""


# --- peak memory of worker processes ---------------------------------------------------------------

class PeakMemory:
    """Every descendant process's peak resident set (VmHWM) and command line, sampled from /proc."""

    def __init__(self):
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(0.3):
            parents = {}
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    try:
                        status = (proc / "status").read_text()
                        parents[int(proc.name)] = (int(status.split("PPid:")[1].split()[0]), status)
                    except (OSError, IndexError, ValueError):
                        continue
            for pid, (ppid, status) in parents.items():
                p = ppid
                while p in parents and p != os.getpid():
                    p = parents[p][0]
                if p != os.getpid() or "VmHWM:" not in status:
                    continue
                try:
                    command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                kb = int(status.split("VmHWM:")[1].split()[0])
                self.peaks[pid] = (command, max(kb, self.peaks.get(pid, ("", 0))[1]))

    def worst(self, marker: str) -> float:
        """The largest peak (MB) among the processes whose command line holds `marker`."""
        found = [kb for command, kb in self.peaks.values() if marker in command]
        return max(found, default=0) / 1024


# --- the engines -------------------------------------------------------------------------------------

def timed_command(command: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    # run from the store's folder: the working directory comes first on sys.path, and this repo's faceattr
    # there would shadow the worktree's (PYTHONPATH) for today's path
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=STORE)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def faceattr_command(python: str) -> list[str]:
    return [python, "-c", "import sys; from faceattr.cli import main; sys.exit(main())"]


def spark_job(master: str, first: str, rest: str, uri: str, out: str) -> None:
    """(in its own process) Spark's session, the warm-up job and the steady job, timed apart: JSON."""
    from faceattr.serving import spark

    started = time.perf_counter()
    session = spark.session(master)
    times = {"session": time.perf_counter() - started}
    for name, manifest in (("first", first), ("rest", rest)):
        started = time.perf_counter()
        frame = spark.score(session, spark.read_photos(session, manifest, "photo"), uri)
        frame.write.mode("overwrite").parquet(f"{out}-{name}.parquet")
        times[name] = time.perf_counter() - started
    session.stop()
    print(json.dumps(times))


def max_difference(a, b, columns) -> float:
    import pandas as pd

    a, b = a.set_index("path"), b.set_index("path")
    both = a.index[a["error"].isna() & b.loc[a.index, "error"].isna()]
    return max(float((pd.to_numeric(a.loc[both, c]) - pd.to_numeric(b.loc[both, c])).abs().max()) for c in columns)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="a git worktree of the commit before the change")
    parser.add_argument("--photos", type=int, default=1131, help="the first N photos of utkface-gender")
    parser.add_argument("--warm", type=int, default=131, help="Spark's first job: this many photos")
    parser.add_argument("--gender-photos", dest="gender_photos", type=int, default=300)
    parser.add_argument("--descriptors", type=int, default=200, help="faces described with 1 and 2 workers")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    import pandas as pd

    os.chdir(STORE)   # MLflow's default artifact root (./mlruns) then lands in the temporary store, not the repo

    machine_line = machine()
    uri, before_uri = served_model(args.gender_photos, args.epochs, args.before)
    labels = pd.read_csv(FACES / "labels.csv").head(args.photos)
    labels["path"] = [str(FACES / p) for p in labels["path"]]
    work = Path(STORE)
    labels[["path"]].to_csv(work / "all.csv", index=False)
    labels[["path"]].head(args.warm).to_csv(work / "first.csv", index=False)
    labels[["path"]].iloc[args.warm:].to_csv(work / "rest.csv", index=False)
    python = sys.executable
    cores = os.cpu_count() or 1
    predict = ["predict", str(work / "all.csv"), "--kind", "photo", "--model", uri]
    load_start = os.getloadavg()
    lines = [f"machine: {machine_line}", f"{len(labels)} UTKFace whole photos (200x200) through an `eye` model bundling "
             f"a dlib-resnet gender model (trained here, {args.epochs} epochs)"]

    with PeakMemory() as memory:
        before, _ = timed_command([*faceattr_command(python), "predict", str(work / "all.csv"), "--kind", "photo",
                                   "--model", before_uri, "--out", str(work / "before.csv")],
                                  {"PYTHONPATH": str(Path(args.before).resolve())})
        before_mb = memory.worst("from faceattr.cli import main")
    with PeakMemory() as memory:
        new, printed = timed_command([*faceattr_command(python), *predict, "--out", str(work / "new.parquet"),
                                      "--workers", str(cores), "--profile"])
        new_mb = memory.worst("multiprocessing.spawn")
    spark = {}
    for n in (1, 2):
        with PeakMemory() as memory:
            seconds, out = timed_command([python, str(SCRIPT), "--spark-job", f"local[{n}]", str(work / "first.csv"),
                                          str(work / "rest.csv"), uri, str(work / f"spark{n}")])
            spark[n] = {**json.loads(out.strip().splitlines()[-1]), "process": seconds,
                        "worker_mb": memory.worst("pyspark.daemon"), "jvm_mb": memory.worst("java")}
    rest = len(labels) - args.warm
    for n, times in spark.items():
        times["steady"] = rest / times["rest"]
        times["fixed"] = times["session"] + times["first"] - args.warm / times["steady"]
        times["wall"] = times["session"] + times["first"] + times["rest"]

    old_rate, new_rate = len(labels) / before, len(labels) / new
    lines += [f"today's path (one process, {Path(args.before).name}): {before:7.1f} s  {old_rate:6.2f} photos/s  "
              f"peak {before_mb:.0f} MB",
              f"new one-machine path ({cores} workers):   {new:7.1f} s  {new_rate:6.2f} photos/s  "
              f"peak {new_mb:.0f} MB per worker"]
    lines += ["  " + line.strip() for line in printed.splitlines() if "ms/photo" in line or "wall" in line]
    for n, t in spark.items():
        lines.append(f"Spark local[{n}]: session {t['session']:.1f} s, first {args.warm} photos {t['first']:.1f} s, "
                     f"rest {rest} photos {t['rest']:.1f} s -> steady {t['steady']:.2f} photos/s, fixed start-up "
                     f"{t['fixed']:.1f} s, wall {t['wall']:.1f} s; peak {t['worker_mb']:.0f} MB per Python worker, "
                     f"JVM {t['jvm_mb']:.0f} MB")

    new_answers = pd.read_parquet(work / "new.parquet")
    old_answers = pd.read_csv(work / "before.csv", keep_default_na=False).rename(
        columns={c: f"pred_{c}" for c in ("eyes", "eyes_left", "eyes_right")})
    on_spark = pd.concat([pd.read_parquet(work / f"spark2-{name}.parquet") for name in ("first", "rest")])
    columns = ["pred_eyes", "pred_eyes_left", "pred_eyes_right"]
    spark_diff = max_difference(on_spark, new_answers, columns)
    old_diff = max_difference(old_answers, new_answers, columns)
    same_errors = (on_spark.set_index("path").loc[new_answers["path"], "error"].ne("").to_numpy()
                   == new_answers["error"].ne("").to_numpy()).all()

    from faceattr.features import face_descriptor as fd

    faces = list(labels["path"].head(args.descriptors))
    rates = {}
    for workers in (1, 2):
        started = time.perf_counter()
        fd.describe_files(faces, cache_dir=tempfile.mkdtemp(prefix="descriptors-"), workers=workers)
        rates[workers] = len(faces) / (time.perf_counter() - started)
    load_end = os.getloadavg()

    ratio = lambda value, goal, above=True: f"{value:.2f}x (goal {'>=' if above else '<='} {goal}: " \
        f"{'met' if (value >= goal if above else value <= goal) else 'NOT met'})"  # noqa: E731
    lines += [f"face descriptors ({len(faces)} faces, empty cache, pool start included): 1 worker "
              f"{rates[1]:.2f}/s, 2 workers {rates[2]:.2f}/s",
              "ratios, side by side in this run:",
              f"  new one-machine / today's path, photos/s:        {ratio(new_rate / old_rate, 2.0)}",
              f"  Spark local[2] / local[1], steady rate:          {ratio(spark[2]['steady'] / spark[1]['steady'], 1.7)}",
              f"  Spark local[2] wall / new one-machine wall:      {ratio(spark[2]['wall'] / new, 1.5, False)}",
              f"  descriptors/s, 2 workers / 1:                    {ratio(rates[2] / rates[1], 1.7)}",
              f"  answers, Spark local[2] vs one-machine: max difference {spark_diff:.2e} (goal <= 1e-4: "
              f"{'met' if spark_diff <= 1e-4 else 'NOT met'}); same photos answered: {same_errors}",
              f"  answers, today's path vs new: max difference {old_diff:.2e}",
              f"load average (1, 5, 15 min) at start {', '.join(f'{x:.1f}' for x in load_start)}, at end "
              f"{', '.join(f'{x:.1f}' for x in load_end)} (a shared 2-core machine: other jobs take cores from "
              f"every engine alike; ratios measured side by side)"]
    print("\n".join(lines))
    append_results("Batch scoring: today's path, the one-machine pool, Spark local[1]/local[2]", lines)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--spark-job":
        spark_job(*sys.argv[2:7])
    else:
        sys.exit(main())
