"""How good is a model: the per-gender-mean baseline and its ratio, the collapse check, accuracy.

Every function takes plain arrays and returns a flat {metric: float} dict ready for MLflow.
"""

from __future__ import annotations

import numpy as np

from faceattr.data.manifest import GENDERS


def baseline(y_train, gender_train, y_eval, gender_eval) -> dict[str, float]:
    """The seeds' baseline: predict the training split's per-gender mean.

    `baseline_mse` is the mean of the per-gender MSEs (the seeds' definition); `baseline_mse_pooled`
    is the MSE over all rows. Without gender labels the overall training mean is the prediction.
    """
    y_train, y_eval = np.asarray(y_train, float), np.asarray(y_eval, float)
    gender_train, gender_eval = np.asarray(gender_train, object), np.asarray(gender_eval, object)
    known = set(gender_train) <= set(GENDERS) and set(gender_eval) <= set(GENDERS)
    if not known or len(set(gender_train)) < len(set(gender_eval)):
        prediction = np.full_like(y_eval, y_train.mean())
        mse = float(np.mean((y_eval - prediction) ** 2))
        return {"baseline_mse": mse, "baseline_mse_pooled": mse, "baseline_mean": float(y_train.mean())}
    out: dict[str, float] = {}
    prediction = np.empty_like(y_eval)
    per_gender = []
    for g in GENDERS:
        if not (gender_eval == g).any():
            continue
        mean = float(y_train[gender_train == g].mean())
        rows = gender_eval == g
        prediction[rows] = mean
        mse = float(np.mean((y_eval[rows] - mean) ** 2))
        out[f"baseline_mean_{g}"] = mean
        out[f"baseline_mse_{g}"] = mse
        per_gender.append(mse)
    out["baseline_mse"] = float(np.mean(per_gender))
    out["baseline_mse_pooled"] = float(np.mean((y_eval - prediction) ** 2))
    return out


def baseline_kind(gender_train, gender_eval) -> str:
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


def regression_metrics(y_pred, y_true, gender, y_train, gender_train) -> dict[str, float]:
    """`mse`, the baseline figures and `baseline_ratio` = baseline_mse / mse."""
    y_pred, y_true = np.asarray(y_pred, float).reshape(-1), np.asarray(y_true, float)
    mse = float(np.mean((y_pred - y_true) ** 2))
    base = baseline(y_train, gender_train, y_true, gender)
    out = {"mse": mse, "mae": float(np.mean(np.abs(y_pred - y_true))), **base}
    out["baseline_ratio"] = base["baseline_mse"] / mse if mse > 0 else float("inf")
    # accuracy at 0.5: the label's side of 0.5 (for 0/1 labels such as eye-state open/closed)
    out["accuracy_at_0_5"] = float(np.mean((y_pred >= 0.5) == (y_true >= 0.5)))
    return out


def classification_metrics(probabilities, one_hot) -> dict[str, float]:
    """Accuracy, log loss and the majority-class accuracy to beat, for (N, 2) gender outputs."""
    p, y = np.asarray(probabilities, float), np.asarray(one_hot, float)
    truth = y.argmax(1)
    eps = 1e-7
    return {
        "accuracy": float(np.mean(p.argmax(1) == truth)),
        "log_loss": float(-np.mean(np.log(np.clip(p[np.arange(len(p)), truth], eps, 1.0)))),
        "majority_accuracy": float(max(np.mean(truth == 0), np.mean(truth == 1))),
    }


def identity_metrics(probabilities, labels, groups, threshold: float = 0.5) -> dict[str, float]:
    """"Is this person X?" figures for (N,) or (N, 1) probabilities and 0/1 labels.

    `groups` per row: `target` or `seen` (a person with other photos in training) or `unseen` (a person
    never in training). `seen_accuracy`: accuracy on the new photos of seen people (target included);
    `unseen_accuracy`: on people never seen (all negatives, so it is their true-negative rate). Also
    accuracy, precision, recall, ROC AUC (left out when only one class is present), log loss and the
    majority-class accuracy to beat. Group figures are left out when the group has no rows.
    """
    p = np.asarray(probabilities, float).reshape(-1)
    y = np.asarray(labels, float).reshape(-1) >= 0.5
    groups = np.asarray(groups, object)
    said = p >= threshold
    right = said == y
    eps = 1e-7
    out = {
        "accuracy": float(right.mean()),
        "precision": float((said & y).sum() / said.sum()) if said.any() else 0.0,
        "recall": float((said & y).sum() / y.sum()) if y.any() else float("nan"),
        "log_loss": float(-np.mean(np.where(y, np.log(np.clip(p, eps, 1)), np.log(np.clip(1 - p, eps, 1))))),
        "majority_accuracy": float(max(y.mean(), 1 - y.mean())),
    }
    if y.any() and not y.all():
        from sklearn.metrics import roc_auc_score

        out["roc_auc"] = float(roc_auc_score(y, p))
    for name, members in (("seen", ("target", "seen")), ("unseen", ("unseen",))):
        rows = np.isin(groups, members)
        if rows.any():
            out[f"{name}_accuracy"] = float(right[rows].mean())
            out[f"{name}_photos"] = float(rows.sum())
    return {k: v for k, v in out.items() if v == v}  # no NaN (recall without positives)
