"""Fast smoke tests: one epoch of every experiment YAML (identity with every backbone) on a few synthetic
photos, checked in a real MLflow store; and a logged model that loads and answers where faceattr cannot
be imported (it carries its own code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import expit, logit

from faceattr import config, evaluate, experiment, models, tasks
from faceattr import tracking
from faceattr.data.manifest import GENDERS
from faceattr.data.regions import CUTS, REGION_SIZES
from faceattr.serving import image_bytes
from helpers import eager_steps

REPO = Path(__file__).resolve().parents[1]
# every shipped experiment, so a new YAML is smoke-tested without touching this file
YAMLS = sorted((REPO / "experiments").glob("*.yaml"))
TINY = {"epochs": 1, "batch_size": 32, "data.size": 20, "train.verbose": 0}
# identity from scratch at a small input size; 4 persons x 5 photos, so the target person has photos in
# train, validation and test
IDENTITY = {"data.persons": 4}
# keras.applications backbones from scratch at a small input size
BACKBONE = {"mobilenetv2": {"weights": "none", "model.input_size": 32}, "vgg16": {"weights": "none", "model.input_size": 32}}
# the photo experiments list shared data sets (tests/test_portraits.py trains them on parts of those): here
# their model, region and landmark baseline run on the synthetic photos, which have no lfw-attributes slices;
# a target the generator does not draw (smiling, age) gets random labels in its declared range
SETS = {"data.sets": None, "evaluation.slices": {}, "data.random_labels": True}


def _cases():
    """Every YAML with its own backbone; identity with every backbone; each other task once with each
    backbone an experiment can be switched to (`-P model.backbone=`: its module's SWITCH_DEFAULTS)."""
    loaded = [(path, config.load(str(path))) for path in YAMLS]
    covered = {(cfg["task"], cfg["model"]["backbone"]) for _, cfg in loaded}   # each YAML's own, first
    for path, cfg in loaded:
        own = cfg["model"]["backbone"]
        for backbone in tasks.of(cfg).backbones:
            if backbone != own and cfg["task"] != "identity":
                if (cfg["task"], backbone) in covered or not models.BACKBONES[backbone].SWITCH_DEFAULTS:
                    continue
                covered.add((cfg["task"], backbone))
            extra = {**(IDENTITY if cfg["task"] == "identity" else {}), **BACKBONE.get(backbone, {}),
                     **(SETS if cfg["data"]["sets"] else {})}
            if backbone != own or cfg["task"] == "identity":
                extra["backbone"] = backbone
            yield pytest.param(path, extra, id=path.stem if backbone == own else f"{path.stem}-{backbone}")


def test_every_experiment_yaml_is_smoke_tested():
    names = {p.stem for p in YAMLS}
    assert {"eyes", "mouth", "background", "gender", "identity"} <= names
    ids = {case.id for case in _cases()}
    assert {"identity", "identity-vgg16", "identity-dlib-resnet", "gender-dlib-resnet"} <= ids
    assert names <= ids


def widest_margin_threshold(scores, target) -> float:
    """Identity's served threshold, worked out here by brute force over validation's own scores: of the
    cuts "accept a score >= s" (s each score, or above them all: accept none), the best balanced accuracy
    (true minus false accept rate), the highest s among ties (at most 1), placed midway in log-odds
    between s and the highest score it rejects."""
    scores, target = np.asarray(scores, np.float64), np.asarray(target, bool)
    assert target.any() and not target.all(), "validation must hold the target person and others"
    cuts = [*sorted(set(scores)), np.inf]
    balanced = {s: round(np.mean(scores[target] >= s) - np.mean(scores[~target] >= s), 9) for s in cuts}
    best = min(1.0, max(cuts, key=lambda s: (balanced[s], s)))
    below = scores[scores < best]
    reject = below.max() if below.size else best
    accept, reject = np.clip([best, reject], 1e-7, 1 - 1e-7)
    return float(expit((logit(accept) + logit(reject)) / 2))


def _served_answers(served, cfg, split) -> pd.DataFrame:
    """The logged model's answers for a split's ready inputs (crops or descriptors), with its gender input."""
    return served.predict_arrays(split.model_input[1], split.gender if cfg["task"] == "regression" else None)


@pytest.fixture
def traced_eagerly():
    with eager_steps():
        yield


@pytest.mark.parametrize("path, extra", _cases())
def test_one_epoch_of_every_experiment_logs_a_complete_run(path, extra, module_mlflow_store, synthetic_cache,
                                                           traced_eagerly):
    cfg = config.load(str(path), {**TINY, **extra})
    outcome = experiment.train(cfg, register=True, few_photos=True)   # 20 photos: below data.min_photos
    client = mlflow.MlflowClient()
    model_info = mlflow.models.get_model_info(outcome.model_uri)
    run = client.get_run(model_info.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == cfg["name"] == path.stem

    # params: every key of the resolved config, and what the run computed
    assert params["train.epochs"] == "1" and params["train.batch_size"] == "32" and params["data.size"] == "20"
    assert int(params["model.parameters"]) == outcome.model.count_params() > 0
    assert params["data.digest"] and params["gender_source"]
    left_out = int(params.get("data.left_out", 0))   # dlib-resnet: photos without a usable face
    cuts = len(CUTS.get(cfg["region"], (None,)))   # region eye: a row per eye of each photo
    assert int(params["data.n_train"]) + int(params["data.n_val"]) + int(params["data.n_test"]) == (20 - left_out) * cuts
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0]
    assert metrics["epochs_trained"] == 1

    # the collapse check: the tag, its threshold and the ratio it judged
    assert tags["collapsed"] in ("true", "false") and float(tags["collapse_threshold"]) == \
        cfg["evaluation"]["collapse_threshold"]
    assert "collapse_std_ratio" in metrics
    assert {"collapse_check.json", "slices.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # what a run shows a person (faceattr/views.py), for every task and backbone
    assert {"plots/learning_curves.png", "plots/predicted_vs_true.png", "plots/error_gallery.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    if tasks.of(cfg).reads_gender:
        assert {"gender_weight_swap", "gender_weight_unknown", "photo_weight_shuffle"} <= set(metrics)
        assert tags["leans_on_gender"] in ("true", "false")

    # the logged (and registered) model answers, and its answers are the ones the metrics were computed on
    assert client.get_model_version(cfg["name"], outcome.version).run_id == run.info.run_id
    pyfunc = mlflow.pyfunc.load_model(outcome.model_uri)
    answer = pyfunc.predict(pyfunc.input_example)
    assert list(answer.columns) == [c["name"] for c in model_info.signature.outputs.to_dict()]
    served = pyfunc.unwrap_python_model()
    val = experiment.gather(cfg).splits["val"]   # the same deterministic split the run used
    assert len(val) == int(params["data.n_val"]) > 0
    out = _served_answers(served, cfg, val)
    # how its training crops were made: synthetic photos are whole photos, cut by faceattr
    assert served.record.crops.model_dump() == {"region": cfg["region"], "made_by": "photo"}
    if cfg["task"] == "regression":
        assert {"val_mse", "baseline_mse", "baseline_ratio", "test_mse"} <= set(metrics)
        assert params["gender_source"] == "labels"   # training registers a gender model, never promotes one
        column = cfg["target"]["column"]
        assert metrics["val_mse"] == pytest.approx(np.mean((out[column] - val.labels) ** 2), rel=1e-4)
        assert metrics["baseline_ratio"] == pytest.approx(metrics["baseline_mse"] / metrics["val_mse"], rel=1e-6)
        assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
            "plots/learning_curves.png", "plots/predicted_vs_true.png", "plots/error_gallery.png",
            "plots/crop_check.png"}
    elif cfg["task"] == "classification":
        assert {"val_accuracy", "val_log_loss", "val_majority_accuracy", "test_accuracy"} <= set(metrics)
        said = np.where(out["p_female"] >= 0.5, GENDERS.index("female"), GENDERS.index("male"))
        assert metrics["val_accuracy"] == pytest.approx(np.mean(said == val.labels.argmax(1)))
    else:
        assert params["model.backbone"] == extra["backbone"]
        assert params.get("model.input_size", "32") == "32"
        assert params["class_weights"].startswith("0:") and params["data.person"] == served.record.person
        assert {"val_accuracy", "val_roc_auc", "seen_accuracy", "unseen_accuracy", "test_accuracy"} <= set(metrics)
        threshold = served.record.threshold   # chosen on validation, served and logged
        assert threshold == pytest.approx(widest_margin_threshold(out["p_person"], val.labels >= 0.5), rel=1e-4)
        assert metrics["served_threshold"] == pytest.approx(threshold)
        assert (out["person"] == params["data.person"]).all() and (out["is_person"] == (out["p_person"] >= threshold)).all()
        truth = evaluate.identity_metrics(out["p_person"], val.labels, val.frame["group"], threshold)
        assert metrics["val_accuracy"] == pytest.approx(truth["accuracy"])
        assert metrics["val_roc_auc"] == pytest.approx(truth["roc_auc"], abs=1e-6)


# --- a logged model carries its own code ---------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    repo = Path(sys.argv[1]).resolve()

    def provides_faceattr(entry):
        path = Path(entry or ".").resolve()
        return (path / "faceattr").is_dir() or path == repo

    # no editable-install finder or path hook, no path entry that holds a faceattr package, not the repo
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()
                        and "editable" not in getattr(f, "__module__", "").lower()]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in repr(h).lower()]
    sys.path[:] = [p for p in sys.path if not provides_faceattr(p)]
    sys.path_importer_cache.clear()
    try:
        import faceattr
    except ImportError:
        pass
    else:
        sys.exit(f"faceattr is still importable, from {faceattr.__file__}: this test would prove nothing")

    import mlflow.pyfunc

    answers = {}
    for uri in sys.argv[2:]:
        model = mlflow.pyfunc.load_model(uri)
        answers[uri] = model.predict(model.input_example).to_dict("list")
    import faceattr
    answers["faceattr_file"] = faceattr.__file__
    print("ANSWERS " + json.dumps(answers))
""")


def _example(cfg) -> pd.DataFrame:
    height, width = REGION_SIZES[cfg["region"]]
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    row = {"image": image_bytes(pixels), "kind": "crop"}     # the signature's image column is binary
    if cfg["task"] == "regression":
        row["gender"] = "female"
    return pd.DataFrame([row, {**row, "image": image_bytes(255 - pixels)}])


def test_a_logged_model_loads_and_answers_where_faceattr_cannot_be_imported(module_mlflow_store, tmp_path):
    """Logged models are loaded and queried by a python that cannot import faceattr, so the model's own copy
    of the code must do it: a regression carrying its gender model, and a VGG16 identity model (its custom
    preprocessing layer must be registered by that copy before Keras can load it). Nothing is unpickled
    (MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false): the model is logged from code (serving/entry.py)."""
    uris, expected = [], {}
    cases = [("mouth", {}, models.build(config.load("gender"))),
             ("identity", {**IDENTITY, **BACKBONE["vgg16"], "backbone": "vgg16", "person": "p0001"}, None)]
    for name, extra, bundled in cases:
        cfg = config.load(name, extra)
        with tracking.start_run(f"{name}-untrained") as run:
            info = run.log_model(models.build(cfg), cfg, _example(cfg), bundled)
        uris.append(info.model_uri)
        folder = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / name)))
        flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
        assert Path(flavor["model_code_path"]).name == "entry.py" and (folder / "entry.py").is_file()
        assert not list(folder.rglob("*.pkl")) and "python_model" not in flavor      # nothing pickled
        local = mlflow.pyfunc.load_model(info.model_uri)
        assert (local.unwrap_python_model().gender_model is not None) == (bundled is not None)
        expected[info.model_uri] = local.predict(local.input_example).to_dict("list")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO), *uris], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("ANSWERS "))
    answers = json.loads(line[len("ANSWERS "):])
    loaded_from = Path(answers.pop("faceattr_file")).resolve()
    assert REPO not in loaded_from.parents and "code" in loaded_from.parts   # the model's code/ folder
    assert set(answers) == set(uris)
    for uri in uris:
        got, want = answers[uri], expected[uri]
        assert list(got) == list(want), uri
        for column in want:
            if isinstance(want[column][0], float):
                assert np.allclose(got[column], want[column], atol=1e-5), (uri, column)
            else:
                assert got[column] == want[column], (uri, column)
