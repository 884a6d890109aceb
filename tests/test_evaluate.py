"""The baseline ratio and the collapse check, against hand-computed examples."""

import numpy as np
import pytest

from faceattr import evaluate


def test_baseline_matches_a_hand_computed_example():
    # training means: male (0 + 1) / 2 = 0.5, female (1 + 1 + 0.5) / 3 = 0.8333
    y_train = [0.0, 1.0, 1.0, 1.0, 0.5]
    g_train = ["male", "male", "female", "female", "female"]
    y_val = [1.0, 0.0, 0.5]
    g_val = ["male", "female", "female"]
    out = evaluate.baseline(y_train, g_train, y_val, g_val)
    assert out["baseline_mean_male"] == pytest.approx(0.5)
    assert out["baseline_mean_female"] == pytest.approx(2.5 / 3)
    mse_male = (1.0 - 0.5) ** 2                                             # 0.25
    mse_female = ((0.0 - 2.5 / 3) ** 2 + (0.5 - 2.5 / 3) ** 2) / 2          # 0.402777...
    assert out["baseline_mse_male"] == pytest.approx(mse_male)
    assert out["baseline_mse_female"] == pytest.approx(mse_female)
    assert out["baseline_mse"] == pytest.approx((mse_male + mse_female) / 2)
    assert out["baseline_mse_pooled"] == pytest.approx((mse_male + 2 * mse_female) / 3)


def test_ratio_is_baseline_over_model_mse():
    y_train, g_train = [0.0, 1.0, 0.0, 1.0], ["male", "male", "female", "female"]
    y_val, g_val = np.array([0.0, 1.0]), ["male", "female"]
    out = evaluate.regression_metrics([0.1, 0.9], y_val, g_val, y_train, g_train)
    assert out["mse"] == pytest.approx(0.01)
    assert out["baseline_mse"] == pytest.approx(0.25)
    assert out["baseline_ratio"] == pytest.approx(25.0)
    assert out["accuracy_at_0_5"] == 1.0


def test_without_gender_labels_the_baseline_is_the_overall_mean():
    out = evaluate.baseline([0.0, 1.0, 1.0, 1.0], [None] * 4, [0.0, 1.0], [None] * 2)
    assert out["baseline_mse"] == pytest.approx(((0 - 0.75) ** 2 + (1 - 0.75) ** 2) / 2)
    assert evaluate.baseline_grouping([None] * 4, [None] * 2) == "overall_mean"
    assert evaluate.baseline_grouping(["male"], ["female"]) == "per_gender"


def test_collapse_check_flags_a_constant_predictor_and_passes_a_good_one():
    rng = np.random.default_rng(0)
    labels = rng.choice([0.0, 0.5, 1.0], 200)
    ratio, collapsed = evaluate.collapse_check(np.full(200, 0.62), labels, threshold=0.25)
    assert ratio == 0.0 and collapsed
    nearly_constant = 0.6 + rng.normal(0, 0.01, 200)
    assert evaluate.collapse_check(nearly_constant, labels, 0.25)[1]
    good = np.clip(labels + rng.normal(0, 0.1, 200), 0, 1)
    ratio, collapsed = evaluate.collapse_check(good, labels, threshold=0.25)
    assert ratio > 0.8 and not collapsed


def test_classification_metrics():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], float)
    out = evaluate.classification_metrics(p, y)
    assert out["accuracy"] == 0.75
    assert out["majority_accuracy"] == 0.75
    assert out["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))


def test_decision_threshold_is_the_widest_margin_on_validation():
    from scipy.special import expit, logit

    # separable: midway (log-odds) between the highest non-target and the lowest target
    t = evaluate.decision_threshold([0.1, 0.6, 0.3, 0.9, 0.95], [0, 0, 0, 1, 1])
    assert t == pytest.approx(expit((logit(0.6) + logit(0.9)) / 2)) and 0.6 < t < 0.9
    # not separable: the best balanced accuracy (accept 0.4 and above: TPR 1, FPR 1/3), then midway down
    t = evaluate.decision_threshold([0.1, 0.5, 0.2, 0.4, 0.9], [0, 0, 0, 1, 1])
    assert t == pytest.approx(expit((logit(0.4) + logit(0.2)) / 2))
    # of equally good thresholds, the highest (fewest false accepts)
    # (accept >= 0.9: TPR 1/2, FPR 0; accept >= 0.5: TPR 1, FPR 1/2)
    t = evaluate.decision_threshold([0.2, 0.5, 0.6, 0.9], [0, 1, 0, 1])
    assert t == pytest.approx(expit((logit(0.9) + logit(0.6)) / 2))
    assert evaluate.decision_threshold([0.2, 0.7], [1, 1]) == 0.5


def test_decision_threshold_takes_the_highest_of_exactly_tied_cuts():
    """Ties in balanced accuracy are decided by the rule (the highest cut), never by float noise: the best
    cut worked out here in exact fractions over every score, on small sets with many exact ties."""
    from fractions import Fraction

    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(4, 14))
        scores = rng.integers(1, 20, n) / 20.0               # a coarse grid: many exact ties of J
        labels = rng.integers(0, 2, n).astype(bool)
        if labels.all() or not labels.any():
            continue
        P, N = int(labels.sum()), int((~labels).sum())

        def j(cut):
            return Fraction(int((scores[labels] >= cut).sum()), P) - Fraction(int((scores[~labels] >= cut).sum()), N)

        best = min(1.0, max([*sorted(set(scores)), np.inf], key=lambda cut: (j(cut), cut)))   # inf: accept none
        rejected = scores[scores < best]
        accept, reject = np.clip([best, rejected.max() if rejected.size else best], 1e-7, 1 - 1e-7)
        expected = 1 / (1 + np.sqrt((1 - accept) / accept * (1 - reject) / reject))   # midway in log-odds
        assert evaluate.decision_threshold(scores, labels) == pytest.approx(expected, rel=1e-6), (scores, labels)
