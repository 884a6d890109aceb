"""Pretrained face features (backbone dlib-resnet) against training from scratch, on real photos.

    .venv/bin/python benchmarks/face_features.py [--part gender|ceiling|identity|speed|all] [--seeds 0,1,2]
        [--scratch-targets 5] [--epochs 40] [--photos 100] [--calls 50]

- gender: utkface-gender's held-out test split (by content hash, as `faceattr train` splits it), the
  dlib-resnet head and the gender CNN from scratch (with train.augment, as `faceattr evaluate` trains it)
  on the same split and seeds: test accuracy, mean +- sd over the seeds; and (also --part ceiling) how
  far scikit-learn classifiers on the same descriptors get on that split.
- identity: orl-faces with every one of the 40 people as the target (one embedding pass, cached by
  content, serves all 40): over the held-out photos (validation + test: new photos of seen people and
  people never seen), ROC AUC (mean and worst), next to the cosine-to-mean-descriptor baseline; at the
  served threshold (chosen on validation, tasks.Identity.calibrate) the recall of the target's test
  photos and the false accepts of the unseen people in the test split (validation chose the threshold,
  so only test photos judge it), and the same at a fixed 0.5; and MobileNetV2 from scratch on the
  first --scratch-targets people (minutes each on 2 cores).
- speed: descriptors per second into an empty cache and from the cache, and one-photo latency of an
  identity model through `mlflow models serve` against the in-process pyfunc predict.

Every model is fitted by `experiment.fit_and_log` in a tracked run of experiment
`benchmark-face-features` (a throwaway sqlite store unless MLFLOW_TRACKING_URI is set). Prints its
figures and appends them, with the machine and the exact command, to benchmarks/RESULTS.md. Reads
../shared/data in place (research-only licences: nothing is copied into the repo).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")

from benchmarks.common import SHARED, append_results, machine  # noqa: E402


def fitted(experiment_name: str, overrides: dict, run_name: str):
    """prepare + fit_and_log in one tracked run: (outcome, prepared)."""
    from faceattr import config, experiment, tracking

    cfg = config.load(experiment_name, {"train.verbose": 0, **overrides})
    prepared = experiment.gather(cfg)
    tracking.use_experiment("benchmark-face-features")
    with tracking.start_run(run_name) as run:
        outcome = experiment.fit_and_log(prepared, run, log_model=False)
    return outcome, prepared


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f}% +- {100 * sd:.1f} (n={len(values)}: " \
           + ", ".join(f"{100 * v:.1f}" for v in values) + ")"


def descriptor_ceiling() -> str:
    """How far the dlib descriptors carry gender on the same test split, whatever sits on top: scikit-learn's
    logistic regression and RBF SVM over a grid of C, fitted on the training split (the best test score
    is an optimistic ceiling: the grid is judged on test)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    from faceattr import config, experiment

    cfg = config.load("gender", {"data": str(SHARED / "utkface-gender"), "data.image_region": "face",
                                 "model.backbone": "dlib-resnet"})
    splits = experiment.gather(cfg).splits
    x, y = splits["train"].descriptors, splits["train"].labels[:, 1]
    tx, ty = splits["test"].descriptors, splits["test"].labels[:, 1]
    found = {f"logistic C={c}": LogisticRegression(C=c, max_iter=20000) for c in (1, 10, 100)}
    found.update({f"RBF SVM C={c}": SVC(C=c) for c in (1, 3, 10)})
    scores = {name: clf.fit(x, y).score(tx, ty) for name, clf in found.items()}
    best = max(scores, key=scores.get)
    return (f"gender, utkface-gender test split ({len(ty)} photos), classifiers on the same dlib descriptors: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in scores.items()) + f"; best {best} {100 * scores[best]:.1f}%")


def bench_gender(seeds: list[int], epochs: int) -> list[str]:
    data = {"data": str(SHARED / "utkface-gender"), "data.image_region": "face", "epochs": epochs}
    arms = {"dlib-resnet head": {"model.backbone": "dlib-resnet"},
            "gender CNN from scratch (augment)": {"train.augment": "true"}}
    lines, results = [], {}
    for arm, extra in arms.items():
        accuracies, seconds = [], []
        for seed in seeds:
            start = time.perf_counter()
            outcome, prepared = fitted("gender", {**data, **extra, "seed": seed}, f"gender-{arm}-s{seed}")
            seconds.append(time.perf_counter() - start)
            accuracies.append(outcome.metrics["test_accuracy"])
            print(f"gender {arm} seed {seed}: test accuracy {outcome.metrics['test_accuracy']:.4f} "
                  f"(val {outcome.metrics['val_accuracy']:.4f}, {int(outcome.metrics['epochs_trained'])} epochs, "
                  f"{seconds[-1]:.0f} s)", flush=True)
        n_test, left_out = len(prepared.splits["test"]), len(prepared.left_out)
        results[arm] = accuracies
        lines.append(f"gender, utkface-gender test split ({n_test} photos{f', {left_out} left out: no face' if left_out else ''}), "
                     f"{arm}: {mean_sd(accuracies)}; {statistics.mean(seconds):.0f} s per run")
    print("\n".join(lines), flush=True)
    return lines


def held_out_scores(model, cfg, prepared):
    """Per split (val, test): scores, labels, groups; and the cosine-baseline scores over both."""
    from faceattr import experiment
    from faceattr.features.face_descriptor import cosine_baseline_scores

    found = {}
    for name in ("val", "test"):
        split = prepared.splits[name]
        found[name] = (experiment.scores(model, cfg, split), split.labels >= 0.5, split.frame["group"].to_numpy())
    train = prepared.splits["train"]
    baseline = None
    if train.descriptors is not None:
        target = train.descriptors[train.labels >= 0.5]
        baseline = cosine_baseline_scores(
            target, np.concatenate([prepared.splits[n].descriptors for n in ("val", "test")]))
    return found, baseline


def bench_identity(scratch_targets: int, epochs: int, seed: int) -> list[str]:
    from sklearn.metrics import roc_auc_score

    import pandas as pd

    people = sorted(pd.read_csv(SHARED / "orl-faces" / "labels.csv")["person"].astype(str).unique(),
                    key=lambda p: (len(p), p))   # s1, s2, ..., s40
    arms = {"dlib-resnet head": ({"backbone": "dlib-resnet", "weights": ""}, people),
            "MobileNetV2 from scratch": ({"backbone": "mobilenetv2", "weights": "none", "model.input_size": 96},
                                         people[:scratch_targets])}
    lines = []
    for arm, (extra, targets) in arms.items():
        aucs, base_aucs, thresholds, seconds = [], [], [], []
        at = {"served": [0, 0, 0, 0], "0.5": [0, 0, 0, 0]}   # recalled, targets, false accepts, unseen
        for person in targets:
            start = time.perf_counter()
            overrides = {"data": str(SHARED / "orl-faces"), "person": person, "epochs": epochs, "seed": seed, **extra}
            outcome, prepared = fitted("identity", overrides, f"identity-{arm}-{person}")
            seconds.append(time.perf_counter() - start)
            found, baseline = held_out_scores(outcome.model, prepared.config, prepared)
            scores = np.concatenate([found[n][0] for n in found])
            labels = np.concatenate([found[n][1] for n in found])
            aucs.append(roc_auc_score(labels, scores))
            if baseline is not None:
                base_aucs.append(roc_auc_score(labels, baseline))
            thresholds.append(outcome.served["threshold"])
            test_scores, test_labels, test_groups = found["test"]
            strangers = test_groups == "unseen"
            counts = {}
            for name, threshold in (("served", thresholds[-1]), ("0.5", 0.5)):
                said = test_scores >= threshold
                counts[name] = (int(said[test_labels].sum()), int(test_labels.sum()),
                                int(said[strangers].sum()), int(strangers.sum()))
                at[name] = [a + b for a, b in zip(at[name], counts[name])]
            recalled, positives, accepted, unseen = counts["served"]
            print(f"identity {arm} target {person}: held-out ROC AUC {aucs[-1]:.4f}"
                  + (f" (cosine baseline {base_aucs[-1]:.4f})" if baseline is not None else "")
                  + f", served threshold {thresholds[-1]:.3f}: test recall {recalled}/{positives}, unseen false "
                    f"accepts {accepted}/{unseen}; {seconds[-1]:.0f} s", flush=True)
        line = (f"identity, orl-faces, {len(targets)} targets, {arm}: held-out (val+test) ROC AUC mean "
                f"{np.mean(aucs):.4f}, worst {min(aucs):.4f}")
        if base_aucs:
            line += (f" (cosine-to-mean-descriptor baseline: mean {np.mean(base_aucs):.4f}, "
                     f"worst {min(base_aucs):.4f})")
        for name, (recalled, positives, accepted, unseen) in at.items():
            label = (f"served threshold (chosen on validation; median {np.median(thresholds):.3f}, "
                     f"range {min(thresholds):.3f}-{max(thresholds):.3f})" if name == "served" else "fixed 0.5")
            line += (f"; at the {label}: target recall on test {recalled}/{positives} = {recalled / positives:.3f}, "
                     f"false accepts of unseen people on test {accepted}/{unseen} = {100 * accepted / unseen:.2f}%")
        lines.append(line + f"; {np.mean(seconds):.0f} s per target")
    print("\n".join(lines), flush=True)
    return lines


def bench_speed(photos: int, calls: int) -> list[str]:
    """Descriptors per second into an empty cache, the same photos again from the cache, and one-photo
    latency of an identity dlib-resnet model: in-process pyfunc predict against `mlflow models serve`."""
    import json
    import tempfile

    import mlflow
    import pandas as pd

    from benchmarks.serving import Client, pcts, start_server, stop_server, timed
    from faceattr import config, experiment
    from faceattr.data.regions import load_rgb
    from faceattr.features.face_descriptor import describe_files
    from faceattr.serving import encode_image

    paths = [str(SHARED / "orl-faces" / p) for p in pd.read_csv(SHARED / "orl-faces" / "labels.csv")["path"][:photos]]
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        describe_files(paths, cache_dir=cache)
        fresh = time.perf_counter() - start
        start = time.perf_counter()
        describe_files(paths, cache_dir=cache)
        cached = time.perf_counter() - start
    lines = [f"descriptors, {len(paths)} ORL photos (92x112, whole image as the face box), one thread "
             f"(faceattr runs dlib one face at a time; {os.cpu_count()} cores): {len(paths) / fresh:.1f} photos/s "
             f"({1000 * fresh / len(paths):.0f} ms each) into an empty cache; the cached rerun "
             f"{1000 * cached:.0f} ms in all ({1000 * cached / len(paths):.2f} ms each)"]
    print(lines[-1], flush=True)

    cfg = config.load("identity", {"data": str(SHARED / "orl-faces"), "person": "s1", "backbone": "dlib-resnet",
                                   "weights": "", "train.verbose": 0})
    outcome = experiment.train(cfg, register=False)
    row = {"image": encode_image(np.asarray(load_rgb(paths[0])), "PNG"), "kind": "crop"}
    model = mlflow.pyfunc.load_model(outcome.model_uri)
    in_process = timed(lambda: model.predict(pd.DataFrame([row])), calls)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(outcome.model_uri, 1, Path(tmp), Path(tmp) / "server.log")
        try:
            client, body = Client(port), json.dumps({"dataframe_records": [row]}).encode()
            client.post(body)   # the first request builds the server's lazy parts
            served = timed(lambda: client.post(body), calls)
        finally:
            stop_server(proc)
    lines.append(f"one ORL photo (PNG, kind=crop) through an identity dlib-resnet model, {calls} calls, ms p50/p95/p99: "
                 f"in-process pyfunc predict {pcts(in_process)}, `mlflow models serve` (1 worker) {pcts(served)}")
    print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=("gender", "ceiling", "identity", "speed", "all"))
    parser.add_argument("--photos", type=int, default=100, help="photos the speed part describes")
    parser.add_argument("--calls", type=int, default=50, help="one-photo requests the speed part times")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scratch-targets", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    lines = [machine()]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.part in ("gender", "all"):
        lines += bench_gender(seeds, args.epochs)
    if args.part in ("gender", "ceiling", "all"):
        lines.append(descriptor_ceiling())
        print(lines[-1], flush=True)
    if args.part in ("identity", "all"):
        lines += bench_identity(args.scratch_targets, args.epochs, seeds[0])
    if args.part in ("speed", "all"):
        lines += bench_speed(args.photos, args.calls)
    append_results("Pretrained face features (dlib-resnet) vs from scratch", lines)


if __name__ == "__main__":
    main()
