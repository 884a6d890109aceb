"""`faceattr evaluate`: train from scratch and evaluate on the real sets in ../shared/data (held-out split).

Reuses `experiment.gather` + `experiment.fit_and_log` (the same data path and fit as `faceattr train`),
with `-P`-style overrides (`data=...`, `data.image_region=...`, `data.split=...`). Every set x split kind
is one MLflow run in experiment `evaluate-real`. Figures are on the held-out `test` split (10%, never
trained on nor used for early stopping):
- the metrics of faceattr/evaluate.py, with the same names and meanings as in training (regressions:
  mse, baseline_ratio = the per-gender-mean baseline's MSE / mse; gender: accuracy, log_loss);
- accuracy: prediction on the label's side of 0.5 (gender: argmax);
- per gender (utkface-gender): accuracy among the men and among the women.
Split kinds: `content` (by file hash, the default) and `phash` (near-duplicate video frames, 8x8 average
hash within PHASH_DISTANCE bits, joined by union-find, all on one side: the honest figure).
"""

from __future__ import annotations

from pathlib import Path

from faceattr import config as config_module
from faceattr import evaluate, experiment, names, tasks, tracking

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {
    # close-ups of ONE eye: region `eye` (its cut of a whole photo is set to them), not the two-eye band
    "eye-state": {"experiment": "eyes", "region": "eye", "data.image_region": "eye"},
    "yawn-mouth": {"experiment": "mouth", "data.image_region": "mouth"},
    # aligned 200x200 face crops: the whole image is the face region. Augmentation: ~900 training faces.
    "utkface-gender": {"experiment": "gender", "data.image_region": "face", "train.augment": "true"},
}


def evaluate_set(name: str, split: str = "content", epochs: int = 40, data_root=None, overrides=None) -> dict:
    """Train one model on one real set with one split kind; return its held-out figures."""
    root = Path(data_root) if data_root else SHARED_DATA
    entry = dict(SETS[name])
    exp = entry.pop("experiment")
    settings = {"data": str(root / name), "data.split": split, "epochs": epochs, "train.verbose": "0", **entry,
                **(overrides or {})}
    config = config_module.load(exp, settings)
    prepared = experiment.gather(config)
    tracking.use_experiment("evaluate-real")
    with tracking.start_run(f"{name}-{split}", tags={names.EXPERIMENT: exp, names.DATA: name,
                                                     names.SPLIT: split}) as run:
        outcome = experiment.fit_and_log(prepared, run, log_model=False)
        figures = summarise(outcome.model, config, prepared, outcome.served)
        run.log_metrics({f"real_{k}": v for k, v in figures.items() if isinstance(v, (int, float))})
    counts = prepared.data.frame["split"].value_counts().to_dict()
    return {"set": name, "split": split, "experiment": exp, "epochs_trained": int(outcome.metrics["epochs_trained"]),
            "n_train": counts.get("train", 0), "n_val": counts.get("val", 0), "n_test": counts.get("test", 0),
            **figures}


def summarise(model, config: dict, prepared, served: dict) -> dict:
    """The held-out test split's figures (faceattr/evaluate.py), `accuracy` (the task's share on the
    right side of 0.5), and the accuracy among the men and among the women where gender is known."""
    task, test, train = tasks.of(config), prepared.splits["test"], prepared.splits["train"]
    threshold = config["evaluation"]["collapse_threshold"]
    scores = experiment.scores(model, config, test)
    out = evaluate.evaluate(task, scores, test, train, threshold, served)
    out["accuracy"] = out[task.accuracy_key]
    gender_only = evaluate.slice_labels(test.frame, {})   # the gender slices (views.py logs the same)
    for row in evaluate.slice_table(task, scores, test, train, "test", gender_only, 0, served):
        out[f"accuracy_{row['slice']}"], out[f"n_{row['slice']}"] = row[task.accuracy_key], row["n"]
    return out


def evaluate_sets(names, splits=("content", "phash"), epochs: int = 40, data_root=None, overrides=None) -> list[dict]:
    results = []
    for name in names:
        for split in splits:
            result = evaluate_set(name.strip(), split.strip(), epochs, data_root, overrides)
            print(format_row(result), flush=True)
            results.append(result)
    return results


def format_row(r: dict) -> str:
    extra = "".join(f" {g}={r[f'accuracy_{g}']:.3f}(n={r[f'n_{g}']})" for g in ("male", "female")
                    if f"accuracy_{g}" in r)
    mse = f" mse={r['mse']:.4f} baseline_ratio={r['baseline_ratio']:.2f}" if "mse" in r else ""
    return (f"{r['set']:15s} split={r['split']:7s} test n={r['n_test']:4d} accuracy={r['accuracy']:.4f}"
            f"{mse} epochs={r['epochs_trained']}{extra}")
