"""How good is a model: one evaluation for training, promotion and real-data runs.

`evaluate(task, scores, split, train)` is the only place a model is judged: the task's metrics on
one split (regressions: MSE and the per-gender-mean baseline; gender: accuracy; identity: ROC AUC,
seen/unseen accuracy) plus the collapse check. Each metric name has one meaning everywhere:
`baseline_ratio` is always the seeds' per-gender-mean baseline MSE over the model's MSE.
Every function takes plain arrays and returns a flat {metric: float} dict ready for MLflow.
A regression's figures are NumPy means; scikit-learn is imported by the classification figures that need
it: importing it costs ~0.6 s, which every command paid through the config before it could answer
(issue 30; a training run still pays it, inside Keras).
"""

from __future__ import annotations

import re

import numpy as np

from faceattr.names import COLLAPSED
from faceattr.data.loading import unknown_gender
from faceattr.data.manifest import GENDERS


def evaluate(task, scores, split, train, collapse_threshold: float, served: dict | None = None) -> dict:
    """`task`'s metrics of `scores` (one per photo, `task.scores` of the model's outputs) on `split`
    (its `.labels` and `.frame`), the baseline from `train`, and the collapse check:
    `collapse_std_ratio` and `collapsed` (bool). `served`: the served model's settings (its spec;
    `task.calibrate`), so a model is judged by the decisions it serves."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    found = {**task.metrics(scores, split.labels, split.frame, train.labels, train.frame, served or {}),
             **task.baselines(split, train)}
    ratio, collapsed = collapse_check(scores, task.truth(split.labels), collapse_threshold)
    return {**found, "collapse_std_ratio": ratio, COLLAPSED: collapsed}


def metric_name(split: str, key: str) -> str:
    """A run's name for `key` on `split`: validation figures keep the seeds' names (val_mse,
    baseline_ratio); test ones are all test_*."""
    if split == "test":
        return f"test_{key}"
    return key if key.startswith("baseline") else f"val_{key}"


def baseline(y_train, gender_train, y_eval, gender_eval) -> dict[str, float]:
    """The seeds' baseline: predict the training split's per-gender mean.

    `baseline_mse` is the mean of the per-gender MSEs (the seeds' definition); `baseline_mse_pooled`
    is the MSE over all rows. Without gender labels the overall training mean is the prediction.
    """
    y_train, y_eval = np.asarray(y_train, float), np.asarray(y_eval, float)
    gender_train, gender_eval = np.asarray(gender_train, object), np.asarray(gender_eval, object)
    if baseline_grouping(gender_train, gender_eval) != "per_gender" or len(set(gender_train)) < len(set(gender_eval)):
        prediction = np.full_like(y_eval, y_train.mean())
        mse = _mse(y_eval, prediction)
        return {"baseline_mse": mse, "baseline_mse_pooled": mse, "baseline_mean": float(y_train.mean())}
    out: dict[str, float] = {}
    prediction = np.empty_like(y_eval)
    per_gender = []
    for g in GENDERS:
        rows = gender_eval == g
        if not rows.any():
            continue
        mean = float(y_train[gender_train == g].mean())
        prediction[rows] = mean
        out[f"baseline_mean_{g}"] = mean
        out[f"baseline_mse_{g}"] = _mse(y_eval[rows], prediction[rows])
        per_gender.append(out[f"baseline_mse_{g}"])
    out["baseline_mse"] = float(np.mean(per_gender))
    out["baseline_mse_pooled"] = _mse(y_eval, prediction)
    return out


def _mse(y_true, y_pred) -> float:
    return float(np.mean(np.square(np.asarray(y_true, float).reshape(-1) - np.asarray(y_pred, float).reshape(-1))))


def baseline_grouping(gender_train, gender_eval) -> str:
    """'per_gender' when both splits carry gender labels, else 'overall_mean'."""
    labels = set(np.asarray(gender_train, object)) | set(np.asarray(gender_eval, object))
    return "per_gender" if labels <= set(GENDERS) else "overall_mean"


def collapse_check(predictions, labels, threshold: float) -> tuple[float, bool]:
    """std(predictions) / std(labels): near 0 means the model outputs about the same for every input.

    Returns the ratio and whether it is below `threshold` (collapsed). With constant labels the
    ratio is undefined; the model counts as collapsed only if its outputs are constant too.
    """
    spread = float(np.std(labels))
    ratio = float(np.std(predictions)) / spread if spread > 0 else float("nan")
    collapsed = bool(ratio < threshold) if spread > 0 else bool(np.std(predictions) < 1e-6)
    return ratio, collapsed


def regression_metrics(y_pred, y_true, gender, y_train, gender_train, decision: float | None = 0.5) -> dict[str, float]:
    """`mse`, `mae`, the baseline figures and `baseline_ratio` = baseline_mse / mse; for a score (`decision`:
    the middle of its range, where its answer turns from no to yes) `accuracy_at_0_5`; an amount (age,
    `decision=None`) has no side to be on."""
    y_pred, y_true = np.asarray(y_pred, float).reshape(-1), np.asarray(y_true, float).reshape(-1)
    mse = _mse(y_true, y_pred)
    base = baseline(y_train, gender_train, y_true, gender)
    out = {"mse": mse, "mae": float(np.mean(np.abs(y_true - y_pred))), **base}
    out["baseline_ratio"] = base["baseline_mse"] / mse if mse > 0 else float("inf")
    # accuracy at 0.5: the label's side of 0.5 (for 0/1 labels such as eye-state open/closed)
    if decision is not None:
        out["accuracy_at_0_5"] = float(np.mean((y_true >= decision) == (y_pred >= decision)))
    return out


def classification_metrics(probabilities, one_hot) -> dict[str, float]:
    """Accuracy, log loss and the majority-class accuracy to beat, for (N, 2) gender outputs."""
    from sklearn import metrics as skm

    p, truth = np.asarray(probabilities, float), np.asarray(one_hot, float).argmax(1)
    return {
        "accuracy": skm.accuracy_score(truth, p.argmax(1)),
        "log_loss": skm.log_loss(truth, np.clip(p, 1e-7, 1.0), labels=[0, 1]),
        "majority_accuracy": float(max(np.mean(truth == 0), np.mean(truth == 1))),
    }


def decision_threshold(scores, labels) -> float:
    """The threshold with the best balanced accuracy (Youden's J = TPR - FPR) on these scores, the highest
    of the ties (fewest false accepts), placed midway in log-odds between the lowest score it accepts and
    the highest it rejects: the widest margin on both sides when validation separates the classes.
    0.5 when the labels hold one class only (nothing to choose from)."""
    from scipy.special import expit, logit
    from sklearn import metrics as skm

    s, y = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels, bool).reshape(-1)
    if y.all() or not y.any():
        return 0.5
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    # J in whole counts (TP * N - FP * P = J * P * N): float TPR - FPR makes equal cuts differ by rounding
    # noise, and then the noise, not the rule, picks among the ties
    positives, negatives = int(y.sum()), int((~y).sum())
    j = np.rint(tpr * positives) * negatives - np.rint(fpr * negatives) * positives
    accept = min(float(thresholds[np.argmax(j)]), 1.0)   # the first (highest) of the best
    rejected = s[s < accept]
    reject = float(rejected.max()) if rejected.size else accept
    eps = 1e-7
    return float(expit((logit(np.clip(accept, eps, 1 - eps)) + logit(np.clip(reject, eps, 1 - eps))) / 2))


def identity_metrics(probabilities, labels, groups, threshold: float = 0.5) -> dict[str, float]:
    """"Is this person X?" figures for (N,) or (N, 1) probabilities and 0/1 labels.

    `groups` per row: `target` or `seen` (a person with other photos in training) or `unseen` (a person
    never in training). `seen_accuracy`: accuracy on the new photos of seen people (target included);
    `unseen_accuracy`: on people never seen (all negatives, so it is their true-negative rate). Also
    accuracy, precision, recall, ROC AUC (left out when only one class is present), log loss and the
    majority-class accuracy to beat. Group figures are left out when the group has no rows.
    """
    from sklearn import metrics as skm

    p = np.asarray(probabilities, float).reshape(-1)
    y = np.asarray(labels, float).reshape(-1) >= 0.5
    groups = np.asarray(groups, object)
    said = p >= threshold
    right = said == y
    out = {
        "accuracy": float(right.mean()),
        "precision": skm.precision_score(y, said, zero_division=0.0),
        "log_loss": skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[False, True]),
        "majority_accuracy": float(max(y.mean(), 1 - y.mean())),
    }
    if y.any():
        out["recall"] = skm.recall_score(y, said)
    if y.any() and not y.all():
        out["roc_auc"] = skm.roc_auc_score(y, p)
    for name, members in (("seen", ("target", "seen")), ("unseen", ("unseen",))):
        rows = np.isin(groups, members)
        if rows.any():
            out[f"{name}_accuracy"] = float(right[rows].mean())
            out[f"{name}_photos"] = float(rows.sum())
    return {k: float(v) for k, v in out.items()}


# --- slices: the same metrics per group of people -----------------------------------------------------

DEFAULT_BANDS = 4      # a numeric column named without edges: cut at its quartiles
CATEGORY_LIMIT = 12    # ... unless it has at most this many values (then each value is a slice)


def slice_labels(frame, named: dict) -> dict:
    """{column: each row's slice name} for `gender` (when the rows carry it), `set` (when the rows come
    from several data sets: a person sees close-ups and whole faces apart) and every column `named`
    (`evaluation.slices`: band edges for a number, or None: its values, or quartile bands for a number
    with many values). Bands are half-open [low, high): `20-40`; below the first edge `under-0`, from
    the last one up `60-up`. Rows without a value get no slice (None)."""
    import pandas as pd

    out = {}
    if "gender" in frame and frame["gender"].isin(GENDERS).any():
        genders = frame["gender"].to_numpy(object)
        out["gender"] = np.where(np.isin(genders, GENDERS), genders, None)
    if "set" in frame and frame["set"].nunique() > 1:
        out["set"] = frame["set"].to_numpy(object)
    for column, edges in named.items():
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values)
        if edges is None and numeric and values.nunique() > CATEGORY_LIMIT:
            edges = sorted(set(np.round(values.quantile(np.linspace(0, 1, DEFAULT_BANDS + 1)[:-1]), 6)))
        if edges is None or not numeric:
            out[column] = np.array([None if pd.isna(v) else _slice_name(v) for v in values], object)
            continue
        bounds = [-np.inf, *edges, np.inf]
        names = [f"under-{edges[0]:g}", *(f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])), f"{edges[-1]:g}-up"]
        band = pd.cut(values, bounds, right=False, labels=names).to_numpy(object)
        out[column] = np.where(pd.isna(band), None, band)
    return out


def _slice_name(value) -> str:
    """A value as it can stand in an MLflow metric name (letters, digits, _ - . and space)."""
    text = f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", text)


def slice_table(task, scores, split, train, split_name: str, labels: dict, min_photos: int,
                served: dict | None = None) -> list[dict]:
    """One row per slice of `split`: split, column, slice, n, gated (n >= min_photos: a promotion may
    judge it) and the task's `slice_metrics` on those rows alone (a slice of one class has no ROC AUC:
    NaN), at the `served` settings (`evaluate`). Small slices are still reported, with their count."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    rows = []
    for column, names in labels.items():
        for name in sorted({n for n in names if n is not None}):
            where = np.flatnonzero(names == name)
            part = split.take(where)
            found = task.metrics(scores[where], part.labels, part.frame, train.labels, train.frame, served or {})
            rows.append({"split": split_name, "column": column, "slice": name, "n": len(where),
                         "gated": bool(len(where) >= min_photos),
                         **{k: float(found.get(k, np.nan)) for k in task.slice_metrics}})
    return rows


SLICE_MARK = ".slice."


def slice_metric_name(metric: str, column: str, slice_name: str) -> str:
    """`val_accuracy.slice.gender.female`: MLflow metric names allow no `=`, so dots join the parts."""
    return f"{metric}{SLICE_MARK}{column}.{slice_name}"


# --- the landmark baseline: eye / mouth aspect ratios on whole faces -----------------------------------

LANDMARK_BASELINE = "landmark_baseline_accuracy"


def landmark_baseline(target: str, splits: dict) -> dict[str, float]:
    """The training-free baseline of eyes and mouth on whole faces (features/landmarks.py: EAR, MAR), as
    identity logs its cosine baseline: the ratio's threshold chosen on validation (decision_threshold;
    the literature's value when validation's whole faces hold one class), its accuracy at the label's
    side of 0.5 on validation and test (`val_landmark_baseline_accuracy`, `test_...`) and per set
    (`...slice.set.<name>`, beside the model's own `accuracy_at_0_5` of that set). Empty when no
    validation row is a whole face."""
    from faceattr.features import landmarks

    ratios = {name: landmarks.aspect_ratios(splits[name].frame, target) for name in ("val", "test")
              if len(splits[name])}
    if "val" not in ratios or np.isnan(ratios["val"]).all():
        return {}
    have = ~np.isnan(ratios["val"])
    truth = np.asarray(splits["val"].labels, float).reshape(-1)[have] >= 0.5
    threshold = (landmarks.DEFAULT_THRESHOLDS[target] if truth.all() or not truth.any()
                 else decision_threshold(ratios["val"][have], truth))
    out = {"landmark_baseline_threshold": float(threshold)}
    for name, ratio in ratios.items():
        have = ~np.isnan(ratio)
        if not have.any():
            continue
        right = (ratio[have] >= threshold) == (np.asarray(splits[name].labels, float).reshape(-1)[have] >= 0.5)
        metric = metric_name(name, LANDMARK_BASELINE)
        out[metric] = float(right.mean())
        out[metric_name(name, "landmark_baseline_photos")] = float(have.sum())
        if "set" in splits[name].frame:
            sets = splits[name].frame["set"].to_numpy(object)[have]
            for set_name in sorted(set(sets)):
                out[slice_metric_name(metric, "set", _slice_name(set_name))] = float(right[sets == set_name].mean())
    return out


def trails_baseline(metrics: dict, key: str = "accuracy_at_0_5") -> list[str]:
    """Where the model's test `key` is below the landmark baseline's, overall and per set (`eyes-whole
    0.93 < 0.94`): what the promotion policy's baseline rule will refuse, said in the run that shows it."""
    out = []
    for name, baseline in metrics.items():
        if not name.startswith(f"test_{LANDMARK_BASELINE}"):
            continue
        where = name.removeprefix(f"test_{LANDMARK_BASELINE}")
        mine = metrics.get(f"test_{key}{where}")
        if mine is not None and mine < baseline:
            out.append(f"{where.removeprefix(SLICE_MARK + 'set.') or 'overall'} {mine:.4f} < {baseline:.4f}")
    return out


# --- how much a regression reads its gender input rather than the photo -----------------------------

GENDER_WEIGHTS = ("gender_weight_swap", "gender_weight_unknown", "photo_weight_shuffle")   # gender_weight's metrics


def gender_weight(predict, images, gender, groups, seed: int = 0) -> dict[str, float]:
    """The mean absolute change of `predict(images, gender)` (one score per row) when the gender input
    is swapped (male <-> female), set to unknown [0.5, 0.5], and when the photos are shuffled among
    rows of the same `groups` (gender) with the gender input kept: `gender_weight_swap`,
    `gender_weight_unknown`, `photo_weight_shuffle`. A model that learned per-gender means moves with
    the swap and not with the photos."""
    gender, images = np.asarray(gender, np.float32), np.asarray(images)
    shuffled = np.arange(len(gender))
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups, object)
    for group in set(groups):
        rows = np.flatnonzero(groups == group)
        shuffled[rows] = rng.permutation(rows)
    # one predict over the four versions of the rows: each call costs a pipeline set-up
    base, swapped, unknown, other_photo = np.split(np.asarray(predict(
        np.concatenate([images, images, images, images[shuffled]]),
        np.concatenate([gender, gender[:, ::-1], unknown_gender(len(gender)), gender]))).reshape(-1), 4)
    return {name: float(np.mean(np.abs(moved - base)))
            for name, moved in zip(GENDER_WEIGHTS, (swapped, unknown, other_photo))}


def leans_on_gender(weights: dict[str, float]) -> bool:
    """The answers move more when the gender input is swapped than when the photo is another's."""
    return bool(weights["gender_weight_swap"] > weights["photo_weight_shuffle"])
