"""What real runs, their logged models and a promotion carry, checked against figures computed here from
the split's labels and the models' own Keras outputs, never by calling the code under test.

One module-scoped store, trained once: an untrained gender model registered as the gender champion (its
answers differ from the labels), a one-epoch `mouth` run reading it, a `mouth` run whose model answers one
constant, and two promotions (the run, then the constant one against it). The data are big enough for the
checks to bite: on 60 synthetic photos (30 persons x 2) validation and test hold both genders in unequal
numbers, so a per-gender baseline differs from the pooled one and exactly one gender slice reaches
`min_slice`. (On the smoke tests' 20 photos validation holds 2 photos, both female.)
"""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest

from faceattr import config, experiment, models, serving, tracking
from faceattr.data.loading import load_crops
from faceattr.data.regions import REGION_SIZES
from faceattr import promotion
from helpers import eager_steps, store_in

RUN = {"data.size": 60, "epochs": 1, "train.verbose": 0, "evaluation.gallery": 0}
# the promotion policy under test: the champion comparison alone decides (no thresholds, no collapse rule),
# so a refusal can only come from the champion's fresh figures
POLICY = """\
model: mouth
metric: mse
higher_is_better: false
thresholds: {}
require_no_collapse: false
margin: {relative: 0.02}
"""


def crop_example(cfg) -> pd.DataFrame:
    height, width = REGION_SIZES[cfg["region"]]
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return pd.DataFrame([{"image": serving.encode_image(pixels), "kind": "crop"}])


def constant_model(build, cfg, value: float):
    """The experiment's model (`build`), answering `value` whatever it is shown: its last layer reads
    nothing (zero kernel) and is frozen, so one epoch of training cannot move it."""
    model = build(cfg)
    last = model.get_layer("dense_final")
    kernel, _ = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.array([value], np.float32)])
    last.trainable = False
    return model


def keras_scores(model, images, gender) -> np.ndarray:
    """A regression's served value straight from its Keras model: the output clipped to 0..1."""
    out = model.predict({"image": np.asarray(images, np.float32), "gender": np.asarray(gender, np.float32)},
                        verbose=0)
    return np.clip(np.asarray(out, np.float64).reshape(-1), 0, 1)


def champion_gender(gender_keras, frame) -> np.ndarray:
    """What the gender champion says of these rows: its Keras model on their face crops."""
    faces = load_crops(frame, "face")[0].astype(np.float32)
    return np.asarray(gender_keras.predict({"image": faces}, verbose=0), np.float64)


@pytest.fixture(scope="module")
def runs(module_store_dir, synthetic_cache):
    with pytest.MonkeyPatch.context() as mp:
        store = store_in(module_store_dir, mp)
        next(store)
        try:
            with eager_steps():
                trained = _train_and_promote(module_store_dir)
            yield trained
        finally:
            next(store, None)


def _train_and_promote(folder):
    client = mlflow.MlflowClient()
    # an untrained gender model as the registered champion: its p_female are far from the 0/1 labels
    gender_cfg = config.load("gender", RUN)
    with tracking.start_run("gender-untrained") as run:
        info = run.log_model(models.build(gender_cfg), gender_cfg, crop_example(gender_cfg))
    gender_version = mlflow.register_model(info.model_uri, "gender").version
    client.set_registered_model_alias("gender", "champion", gender_version)

    probe = config.load("mouth", RUN)
    splits = experiment.gather(probe).splits
    counts = splits["val"].frame["gender"].value_counts()
    assert len(counts) == 2 and counts.iloc[0] > counts.iloc[1], f"the data no longer fit these checks: {counts}"
    min_slice = int(counts.iloc[0])          # the larger gender's validation slice has exactly min_slice photos
    cfg = config.load("mouth", {**RUN, "evaluation.min_slice": min_slice})
    trained = experiment.train(cfg, few_photos=True)   # 60 photos: registered although below data.min_photos

    # the constant answer furthest from the test labels: clearly worse than any fitted model
    constant = 1.0 if splits["test"].labels.mean() < 0.5 else 0.0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "build", lambda c, build=models.build: constant_model(build, c, constant))
        flat = experiment.train(cfg, few_photos=True)

    policy_file = folder / "mouth-policy.yaml"
    policy_file.write_text(POLICY)
    policy = promotion.Policy.load("mouth", policy_file)
    first = promotion.promote("mouth", trained.version, policy=policy)
    second = promotion.promote("mouth", flat.version, policy=policy)
    return SimpleNamespace(cfg=cfg, splits=splits, min_slice=min_slice, trained=trained, flat=flat,
                           constant=constant, gender_version=gender_version, first=first, second=second,
                           run=run_of(trained), flat_run=run_of(flat),
                           gender_keras=serving.load(f"models:/gender/{gender_version}").model)


def run_of(outcome):
    """The training run that logged an outcome's model."""
    return mlflow.MlflowClient().get_run(mlflow.get_logged_model(outcome.model_uri.split("/")[-1]).source_run_id)


def per_gender_baseline(train, split) -> float:
    """The seeds' baseline, from the labels: each gender's validation rows predicted by that gender's
    training mean; the mean of the per-gender MSEs."""
    y_train, y = np.asarray(train.labels, float), np.asarray(split.labels, float)
    g_train, g = train.frame["gender"].to_numpy(), split.frame["gender"].to_numpy()
    return float(np.mean([np.mean((y[g == sex] - y_train[g_train == sex].mean()) ** 2) for sex in set(g)]))


def test_the_collapse_check_judges_the_validation_predictions(runs):
    val, threshold = runs.splits["val"], runs.cfg["evaluation"]["collapse_threshold"]
    scores = keras_scores(runs.trained.model, val.images, val.gender)
    ratio = np.std(scores) / np.std(val.labels)
    test = runs.splits["test"]
    assert abs(ratio - np.std(keras_scores(runs.trained.model, test.images, test.gender)) / np.std(test.labels)) > 1e-3
    assert runs.run.data.metrics["collapse_std_ratio"] == pytest.approx(ratio, rel=1e-4)
    assert runs.run.data.tags["collapsed"] == str(bool(ratio < threshold)).lower()
    assert runs.run.data.tags["collapse_threshold"] == str(threshold)
    # a model that answers one constant is a collapsed run, whatever else it logs
    assert runs.flat_run.data.tags["collapsed"] == "true"
    assert runs.flat_run.data.metrics["collapse_std_ratio"] == pytest.approx(0.0, abs=1e-6)


def test_the_baseline_of_a_real_run_is_the_per_gender_mean(runs):
    train, metrics = runs.splits["train"], runs.run.data.metrics
    assert runs.run.data.params["baseline_grouping"] == "per_gender"
    for split, name in (("val", "baseline_mse"), ("test", "test_baseline_mse")):
        rows = runs.splits[split]
        expected = per_gender_baseline(train, rows)
        pooled = float(np.mean((np.asarray(rows.labels, float) - np.mean(train.labels)) ** 2))
        assert abs(expected - pooled) > 1e-3, f"{split}: the pooled baseline would pass this check too"
        assert metrics[name] == pytest.approx(expected, rel=1e-5), split
    val = runs.splits["val"]
    assert metrics["val_mse"] == pytest.approx(
        np.mean((keras_scores(runs.trained.model, val.images, val.gender) - val.labels) ** 2), rel=1e-4)


def test_a_gender_slice_of_exactly_min_slice_photos_is_gated(runs):
    val, metrics = runs.splits["val"], runs.run.data.metrics
    scores = keras_scores(runs.trained.model, val.images, val.gender)
    sexes = val.frame["gender"].to_numpy()
    for sex in set(sexes):
        rows = sexes == sex
        assert metrics[f"val_photos.slice.gender.{sex}"] == rows.sum()
        gated = f"val_mse.slice.gender.{sex}"
        if rows.sum() == runs.min_slice:
            assert metrics[gated] == pytest.approx(np.mean((scores[rows] - val.labels[rows]) ** 2), rel=1e-4)
        else:
            assert rows.sum() < runs.min_slice and gated not in metrics


def test_the_logged_model_records_how_its_crops_were_made(runs):
    """Synthetic photos are whole photos: the mouth model learnt faceattr's cut of them."""
    crops = serving.load(runs.trained.model_uri).record.crops
    assert crops.model_dump() == {"region": "mouth", "made_by": "photo"}


def test_a_regression_reads_the_registered_gender_champion(runs):
    assert runs.run.data.params["gender_source"] == f"model:gender/{runs.gender_version}"
    split = runs.splits["train"]   # what the run fitted on (gathered after the champion was registered)
    said = champion_gender(runs.gender_keras, split.frame)
    labels = np.eye(2)[(split.frame["gender"] == "female").to_numpy(int)]
    assert np.abs(said - labels).max() > 0.1                # the champion's answers are not the labels
    assert np.allclose(split.gender, said, atol=1e-5)
    bundled = serving.load(runs.trained.model_uri).gender_model
    assert np.allclose(champion_gender(bundled, split.frame), said, atol=1e-5)


def test_promotion_evaluates_the_champion_afresh_and_refuses_a_worse_challenger(runs):
    client = mlflow.MlflowClient()
    assert runs.first.action == "promoted"
    assert runs.second.action == "refused" and runs.second.champion == str(runs.trained.version)
    assert str(client.get_model_version_by_alias("mouth", "champion").version) == str(runs.trained.version)
    # both models judged now, on the test rows, with the gender input they were trained with
    test = runs.splits["test"]
    gender = champion_gender(runs.gender_keras, test.frame)
    champion_mse = float(np.mean((keras_scores(runs.trained.model, test.images, gender) - test.labels) ** 2))
    challenger_mse = float(np.mean((runs.constant - test.labels) ** 2))
    assert challenger_mse > 1.1 * champion_mse
    logged = client.get_run(runs.second.run_id).data.metrics
    assert logged["champion_mse"] == pytest.approx(champion_mse, rel=1e-4)
    assert logged["challenger_mse"] == pytest.approx(challenger_mse, rel=1e-4)


def test_a_run_hands_back_the_fits_traced_steps_before_it_judges_and_logs_the_model(runs):
    """experiment.fit_and_log calls train.release_fit_memory after the fit: the peak of a run is what the fit
    left plus MLflow's reload of the logged model (issue 30). Fails without that call."""
    assert runs.trained.model.train_function is None and runs.trained.model.test_function is None
