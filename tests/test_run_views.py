"""What a run shows a person: slices, the gender-input weight, the error gallery, readable plots and
the slice rules of a promotion policy."""

import json

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pytest

from faceattr import config, evaluate, experiment, plots, tasks
from faceattr.data.loading import Split, gender_one_hot
from faceattr.errors import ConfigError
from faceattr import promotion as promote

SMALL = {"epochs": 2, "data.size": 120, "train.verbose": 0}


def split_of(frame: pd.DataFrame, labels) -> Split:
    n = len(frame)
    return Split({"image": np.zeros((n, 4, 4, 3), np.uint8)}, gender_one_hot(frame), np.asarray(labels, np.float32), frame)


# --- slices -------------------------------------------------------------------------------------------

def test_slice_labels_band_numbers_name_categories_and_always_slice_gender():
    frame = pd.DataFrame({"gender": ["male", "female", "female", "male", "x"],
                          "age": [5, 20, 39.5, 61, np.nan], "race": ["black", "white", "other/mixed", "white", None]})
    found = evaluate.slice_labels(frame, {"age": [0, 20, 40, 60], "race": None})
    assert list(found["gender"]) == ["male", "female", "female", "male", None]
    assert list(found["age"]) == ["0-20", "20-40", "20-40", "60-up", None]     # [low, high)
    assert list(found["race"]) == ["black", "white", "other_mixed", "white", None]  # metric-safe names
    ages = pd.DataFrame({"age": np.arange(18, 98)})     # many values, no edges: quartile bands
    assert len(set(evaluate.slice_labels(ages, {"age": None})["age"])) == evaluate.DEFAULT_BANDS
    assert "gender" not in evaluate.slice_labels(ages, {})


def test_slice_table_judges_each_slice_alone_and_gates_only_large_slices():
    task = tasks.TASKS["classification"]
    frame = pd.DataFrame({"gender": ["male"] * 30 + ["female"] * 5})
    labels = gender_one_hot(frame)
    scores = np.r_[np.full(27, 0.1), np.full(3, 0.9), np.full(5, 0.2)]   # men 27/30 right, women 0/5
    split = split_of(frame, labels)
    rows = evaluate.slice_table(task, scores, split, split, "val", evaluate.slice_labels(frame, {}), 20)
    by = {r["slice"]: r for r in rows}
    assert by["male"]["accuracy"] == pytest.approx(0.9) and by["male"]["n"] == 30 and by["male"]["gated"]
    assert by["female"]["accuracy"] == 0.0 and by["female"]["n"] == 5 and not by["female"]["gated"]
    assert set(rows[0]) == {"split", "column", "slice", "n", "gated", *task.slice_metrics}


def test_slice_metric_names_are_accepted_by_mlflow(mlflow_store):
    name = evaluate.slice_metric_name("val_accuracy", "race", evaluate.slice_labels(
        pd.DataFrame({"race": ["asian+white"]}), {"race": None})["race"][0])
    with mlflow.start_run() as run:
        mlflow.log_metric(name, 0.5)      # MLflow refuses "+" (and "=") in a metric name
    assert mlflow.get_run(run.info.run_id).data.metrics == {"val_accuracy.slice.race.asian_white": 0.5}


# --- gender-input weight ------------------------------------------------------------------------------

def test_gender_weight_tells_a_per_gender_mean_from_a_model_that_reads_the_photo():
    rng = np.random.default_rng(0)
    photos = rng.random((40, 3))
    gender = np.eye(2, dtype=np.float32)[np.arange(40) % 2]
    groups = np.where(gender[:, 1] > 0.5, "female", "male")
    means = evaluate.gender_weight(lambda p, g: 0.2 + 0.6 * g[:, 1], photos, gender, groups)
    assert means["gender_weight_swap"] == pytest.approx(0.6) and means["gender_weight_unknown"] == pytest.approx(0.3)
    assert means["photo_weight_shuffle"] == 0.0 and evaluate.leans_on_gender(means)
    looks = evaluate.gender_weight(lambda p, g: p[:, 0], photos, gender, groups)
    assert looks["gender_weight_swap"] == 0.0 and looks["photo_weight_shuffle"] > 0.1
    assert not evaluate.leans_on_gender(looks)


# --- what counts as wrong, per task ---------------------------------------------------------------------

def test_each_task_shows_its_own_worst_answers():
    # a score's mistakes are answers on the wrong side of 0.5 (accuracy_at_0_5), largest error first, among
    # labels with a side: a half-open photo (label 0.5) is on neither, whether answered 0.95 or 0.45
    eyes = tasks.of({"task": "regression", "target": "eyes"})
    regression = eyes.mistakes(np.array([0.95, 0.9, 0.2, 0.45, 0.3, 0.6]),
                               np.array([0.5, 0.0, 1.0, 0.5, 0.2, 0.0]), None, 4, {})
    assert [i for i, _ in regression] == [1, 2, 5] and "true 0.00" in regression[0][1]
    # an amount (age in years, declared in its YAML) has no side: its largest errors, in its unit
    age = tasks.of({"task": "regression", "target": {"column": "age", "range": [0, 120], "unit": "years"}})
    found = age.mistakes(np.array([30.0, 52.0, 41.0, 20.0]), np.array([31.0, 40.0, 60.0, 20.5]), None, 2, {})
    assert [i for i, _ in found] == [2, 1] and "true 60.0 years" in found[0][1]
    gender = tasks.TASKS["classification"]
    one_hot = np.eye(2)[[0, 0, 1, 1]]                          # male, male, female, female
    found = gender.mistakes(np.array([0.6, 0.99, 0.9, 0.3]), one_hot, None, 10, {})
    assert [i for i, _ in found] == [1, 3, 0]                  # only mistakes, the most confident first
    frame = pd.DataFrame({"group": ["seen", "unseen", "target", "seen", "unseen", "target"]})
    scores, labels = np.array([0.9, 0.7, 0.1, 0.95, 0.2, 0.4]), np.array([0, 0, 1, 0, 0, 1])
    identity = tasks.TASKS["identity"].mistakes(scores, labels, frame, 4, {})
    assert [i for i, _ in identity] == [1, 3, 2, 5]            # half accepts (unseen first), half rejects
    assert "false accept (unseen)" in identity[0][1] and "false reject" in identity[-1][1]
    strict = tasks.TASKS["identity"].mistakes(scores, labels, frame, 4, {"threshold": 0.8})   # the served one
    assert [i for i, _ in strict] == [3, 0, 2, 5]


# --- plots ----------------------------------------------------------------------------------------------

def inside(fig) -> bool:
    """Everything the figure draws (labels, titles, ticks, legend, captions) lies within the saved image."""
    fig.canvas.draw()
    drawn, width, height = fig.get_tightbbox(), *fig.get_size_inches()   # inches
    return drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01


def test_learning_curves_show_the_baseline_and_the_learning_rate_cuts_unclipped():
    history = {"loss": [0.5, 0.3, 0.2, 0.19], "val_loss": [0.4, 0.3, 0.25, 0.24],
               "learning_rate": [1e-3, 1e-3, 1e-4, 1e-4]}
    fig = plots.learning_curves(history, 0.28)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "baseline (0.28)" in labels and "learning rate cut" in labels
    cut = next(line for line in fig.axes[0].get_lines() if line.get_label() == "learning rate cut")
    assert cut.get_xdata()[0] == pytest.approx(1.5)
    assert inside(fig)


def test_predicted_vs_true_colours_each_gender_unclipped():
    fig = plots.predicted_vs_true([0, 1, 0.5], [0.1, 0.8, 0.4], np.array(["male", "female", "female"]), "eyes")
    assert [c.get_label() for c in fig.axes[0].collections] == ["male (n=1)", "female (n=2)"]
    assert inside(fig)


def test_error_gallery_captions_fit():
    photos = np.zeros((9, 32, 60, 3), np.uint8)
    assert inside(plots.error_gallery(photos, ["true 1.00\npredicted 0.12"] * 9, "eyes: most wrong"))


# --- configuration and promotion --------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ({"evaluation.gallery": -1}, "evaluation.gallery"),
    ({"evaluation.min_slice": 0}, "evaluation.min_slice"),
    ({"evaluation.slices": {"age": [40, 20]}}, "evaluation.slices.age"),
    ({"evaluation.slices": {"age": "young"}}, "evaluation.slices.age"),
])
def test_bad_evaluation_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load("eyes", override)


def test_a_slice_column_the_data_lacks_is_refused_before_training(synthetic_cache):
    cfg = config.load("eyes", {**SMALL, "evaluation.slices": {"age": None}})
    with pytest.raises(ConfigError, match=r"evaluation\.slices\.age.*no column 'age'"):
        experiment.gather(cfg)


GENDER_POLICY = promote.Policy(model="gender", metric="accuracy", higher_is_better=True, thresholds={},
                               slices={"metric": "val_accuracy", "min_worst": 0.9, "max_gap": 0.05})
FINE = {"accuracy": 0.95, "collapsed": False}


def test_policy_slices_refuse_naming_the_worst_slice_and_the_gap():
    fair = {("gender", "male"): (0.95, 60), ("gender", "female"): (0.93, 58)}
    assert promote.decide(GENDER_POLICY, FINE, None, fair).promote
    worst = promote.decide(GENDER_POLICY, FINE, None, {**fair, ("race", "indian"): (0.85, 25),
                                                       ("race", "white"): (0.96, 40)})
    assert not worst.promote
    assert any("worst slice race=indian (0.85, n=25) is below the minimum 0.9" in r for r in worst.reasons)
    assert any("between slices race=white (0.96, n=40) and race=indian" in r for r in worst.reasons)
    assert not any("gender=" in r for r in worst.reasons)      # the gap is judged within a column
    apart = {("gender", "male"): (0.99, 60), ("gender", "female"): (0.97, 58),
             ("race", "black"): (0.93, 30), ("race", "white"): (0.92, 40)}   # 0.07 apart only across columns
    assert promote.decide(GENDER_POLICY, FINE, None, apart).promote
    nothing = promote.decide(GENDER_POLICY, FINE, None, {})
    assert not nothing.promote and "no gated slice" in nothing.reasons[0]


def test_policy_file_slices_are_validated(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("metric: accuracy\nhigher_is_better: true\nslices: {metric: val_accuracy, min_worst: 0.9}\n")
    assert promote.Policy.load("gender", path).slices.model_dump(exclude_none=True) == {"metric": "val_accuracy", "min_worst": 0.9}
    path.write_text("metric: accuracy\nhigher_is_better: true\nslices: {metric: val_accuracy}\n")
    with pytest.raises(ConfigError, match="slices"):
        promote.Policy.load("gender", path)
    path.write_text("metric: accuracy\nhigher_is_better: true\nslices: {metric: val_accuracy, max_gap: -1}\n")
    with pytest.raises(ConfigError, match=r"slices\.max_gap"):
        promote.Policy.load("gender", path)


# --- a real run ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_logs_slices_gender_weight_and_gallery_and_the_policy_reads_them(mlflow_store, synthetic_cache):
    outcome = experiment.train(config.load("eyes", {**SMALL, "evaluation.min_slice": 5}))
    client = mlflow.MlflowClient()
    run = client.get_run(client.get_model_version("eyes", outcome.version).run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert {"gender_weight_swap", "gender_weight_unknown", "photo_weight_shuffle"} <= set(metrics)
    leans = metrics["gender_weight_swap"] > metrics["photo_weight_shuffle"]
    assert tags["leans_on_gender"] == str(leans).lower()
    table = json.load(open(client.download_artifacts(run.info.run_id, "slices.json")))
    assert table["columns"][:5] == ["split", "column", "slice", "n", "gated"]
    rows = [dict(zip(table["columns"], r)) for r in table["data"]]
    assert {(r["split"], r["slice"]) for r in rows} == {(s, g) for s in ("val", "test") for g in ("male", "female")}
    female = next(r for r in rows if r["split"] == "val" and r["slice"] == "female")
    assert metrics["val_photos.slice.gender.female"] == female["n"]
    if female["gated"]:
        assert metrics["val_mse.slice.gender.female"] == pytest.approx(female["mse"])
    slices = promote.training_slices(client.get_model_version("eyes", outcome.version), "val_mse")
    assert {k for k in slices} == {("gender", r["slice"]) for r in rows if r["split"] == "val" and r["gated"]}
    quiet = experiment.train(config.load("eyes", {**SMALL, "epochs": 1, "evaluation.gallery": 0}))
    quiet_run = client.get_model_version("eyes", quiet.version).run_id
    assert "plots/error_gallery.png" not in {a.path for a in client.list_artifacts(quiet_run, "plots")}
