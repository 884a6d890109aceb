"""A bundle against its members one by one (issue 28): the same whole UTKFace photos, in one run.

    .venv/bin/python benchmarks/bundle.py [--photos 300] [--chunk 50] [--repeats 1]

Members: eyes-photo, mouth-photo, gender (dlib-resnet), smiling, glasses, age, each trained one epoch on
a few synthetic photos (random labels where the generator draws none: the cost of an answer does not
depend on what the model learnt) and made its model's champion in a throwaway store. Then, on the same
photos, in chunks of `--chunk` (a request's rows):
- served: each member's pyfunc `predict` (kind=photo) one after the other, against the bundle's `predict`
  with faces=all and faces=subject;
- `faceattr predict` (serving/batch.score, one worker): each member's folder, against the bundle's.
Models are loaded before the clock starts. Prints seconds per photo and the ratios; appends them to
benchmarks/RESULTS.md. Goals: the bundle >= 2.5x cheaper per photo than its members one by one; with
faces=subject within 1.3x of the single most expensive member.
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
STORE = tempfile.mkdtemp()
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{STORE}/mlflow.db")
os.chdir(STORE)   # the throwaway store's artifacts too

from benchmarks.common import SHARED, append_results, machine  # noqa: E402

MEMBERS = {"gender": {"model.backbone": "dlib-resnet"}, "eyes-photo": {}, "mouth-photo": {}, "smiling": {},
           "glasses": {}, "age": {}}
SMOKE = {"epochs": 1, "data.size": 40, "train.verbose": 0, "data.sets": None, "evaluation.slices": {},
         "data.random_labels": True}


def champions() -> dict[str, str]:
    """Each member trained (gender first: the regressions bundle it) and made its model's champion."""
    from faceattr import config, experiment, registry

    out = {}
    for name, extra in MEMBERS.items():
        outcome = experiment.train(config.load(name, {**SMOKE, **extra}), register=True, few_photos=True)
        registry.move_champion(name, outcome.version)
        out[name] = outcome.version
    return out


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import pandas as pd

    from faceattr import bundling, serving
    from faceattr.data import faces
    from faceattr.serving import batch

    faces.one_tf_thread()   # as a worker of faceattr predict runs: one core's cost
    versions = champions()
    made = bundling.make("faces", list(MEMBERS))
    root = SHARED / "utkface-gender"
    paths = [str(root / p) for p in pd.read_csv(root / "labels.csv")["path"][:args.photos]]
    rows = pd.DataFrame({"image": [open(p, "rb").read() for p in paths], "kind": "photo"})
    chunks = [rows.iloc[i:i + args.chunk] for i in range(0, len(rows), args.chunk)]
    bundle = serving.load(f"models:/faces/{made.version}")
    models = {name: serving.load(f"models:/{name}/{v}") for name, v in versions.items()}
    for model in [bundle, *models.values()]:   # warm: traced, dlib loaded
        model.predict(None, rows.iloc[:2], *([{"faces": "all"}] if model is bundle else []))

    served = {name: timed(lambda m=m: [m.predict(None, c) for c in chunks], args.repeats) for name, m in models.items()}
    served_bundle = timed(lambda: [bundle.predict(None, c, {"faces": "all"}) for c in chunks], args.repeats)
    served_subject = timed(lambda: [bundle.predict(None, c, {"faces": "subject"}) for c in chunks], args.repeats)
    listing = pd.DataFrame({"path": paths, "kind": "photo"})
    batched = {name: timed(lambda m=m: batch.score(m, listing, args.chunk, progress=False), args.repeats)
               for name, m in models.items()}
    batched_bundle = timed(lambda: batch.score(bundle, listing, args.chunk, progress=False), args.repeats)

    n = len(paths)
    ms = lambda seconds: f"{1000 * seconds / n:7.1f} ms/photo"   # noqa: E731
    lines = [machine(), f"{n} whole UTKFace photos, chunks of {args.chunk}, one TF thread, best of {args.repeats}"]
    for engine, alone, together, subject in (("served", served, served_bundle, served_subject),
                                              ("faceattr predict", batched, batched_bundle, None)):
        one_by_one, dearest = sum(alone.values()), max(alone, key=alone.get)
        lines.append(f"{engine}: members one by one {ms(one_by_one)} ("
                     + ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in alone.items()) + ")")
        lines.append(f"{engine}: bundle, faces=all {ms(together)}: {one_by_one / together:.2f}x cheaper than one "
                     f"by one (goal >= 2.5x)")
        if subject is not None:
            lines.append(f"{engine}: bundle, faces=subject {ms(subject)}: {subject / alone[dearest]:.2f}x the most "
                         f"expensive member, {dearest} {ms(alone[dearest])} (goal <= 1.3x)")
    print("\n".join(lines))
    if not args.no_write:
        append_results("A bundle against its members one by one", lines)


if __name__ == "__main__":
    main()
