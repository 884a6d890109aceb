"""Whole portraits (issue 23): several data sets at once, the subject-face rule, the landmark baselines,
and the `eyes-photo` experiment end to end on small parts of the shared sets (slow)."""

import json
import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from faceattr import config, experiment
from faceattr.data import faces, synthetic
from faceattr.data.regions import crop_region, parse_box
from faceattr.data.tfdata import to_tf_dataset
from faceattr.errors import DataError
from faceattr.features import landmarks

from helpers import require_face_features, shared_data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- several sets at once --------------------------------------------------------------------------

def eye_crops(folder, seed):
    """A set of ready `eyes` crops (cut from synthetic photos by their boxes), labelled, in `folder`."""
    source = synthetic.default_dataset(size=40, seed=seed)
    frame = pd.read_csv(source)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, row in frame.iterrows():
        image = Image.open(source.parent / row["path"]).convert("RGB")
        name = f"images/{i:03d}.png"
        Image.fromarray(crop_region(image, "eyes", parse_box(row["eyes_box"]))).save(folder / name)
        rows.append({"path": name, "eyes": row["eyes"]})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def experiment_file(tmp_path, sets):
    """An eyes experiment YAML training on `sets` (`data:` as a list, paths relative to the YAML)."""
    raw = yaml.safe_load((config.EXPERIMENTS_DIR / "eyes.yaml").read_text())
    raw["data"] = sets
    raw["evaluation"] = {"min_slice": 2, "gallery": 0}
    path = tmp_path / "exp" / "two-sets.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_sets_train_split_apart_and_report_per_set_metrics(tmp_path, mlflow_store, synthetic_cache):
    photos = synthetic.default_dataset(size=60, seed=1)          # whole photos with boxes and people
    crops = eye_crops(tmp_path / "crops", seed=2)                   # ready eye bands, no people
    path = experiment_file(tmp_path, [
        {"source": str(photos), "name": "photos"},
        {"source": "../crops", "image_region": "eyes", "weight": 2.0, "labels": {"gender": "female"}}])
    cfg = config.load(str(path), {"epochs": 1, "train.verbose": 0})
    assert cfg["data"]["sets"][1]["source"] == str(crops.resolve())   # relative to the YAML

    prepared = experiment.gather(cfg)
    frame = prepared.data.frame
    assert frame["set"].value_counts().to_dict() == {"photos": 60, "crops": 40}
    # each set is split on its own, and apart: one person's photos and one file's content on one side
    for name, rows in frame.groupby("set"):
        assert set(rows["split"]) == {"train", "val", "test"}, name
    people = frame[frame["set"] == "photos"].groupby("person")["split"].nunique()
    assert (people == 1).all()
    assert (frame.groupby("content_sha1")["split"].nunique() == 1).all()
    assert (frame.loc[frame["set"] == "crops", "gender"] == "female").all()   # the fixed label value
    # the set's weight is each of its rows' sample weight in training
    train = prepared.splits["train"]
    _, _, weights = next(iter(to_tf_dataset(train, len(train), True).unbatch().batch(len(train))))
    expected = np.where(train.frame["set"] == "crops", 2.0, 1.0)
    np.testing.assert_allclose(weights.numpy(), expected)

    outcome = experiment.train(cfg, register=False)
    client = mlflow.MlflowClient()
    run = client.get_run(mlflow.get_logged_model(outcome.model_uri.split("/")[-1]).source_run_id)
    n_val = {}
    for name in ("photos", "crops"):   # per-set figures, slices like any other column
        n_val[name] = int(((frame["set"] == name) & (frame["split"] == "val")).sum())
        assert run.data.metrics[f"val_photos.slice.set.{name}"] == n_val[name]
    # each set's accuracy is over its own rows: weighted by their counts, the sets make up the whole
    by_set = sum(run.data.metrics[f"val_accuracy_at_0_5.slice.set.{name}"] * n for name, n in n_val.items())
    assert by_set / sum(n_val.values()) == pytest.approx(run.data.metrics["val_accuracy_at_0_5"], abs=1e-6)
    table = json.loads(open(client.download_artifacts(run.info.run_id, "slices.json")).read())
    column = table["columns"].index("column")
    assert {row[table["columns"].index("slice")] for row in table["data"] if row[column] == "set"} == {"photos", "crops"}


def test_a_missing_set_or_label_is_named_by_its_index_before_anything_trains(tmp_path, synthetic_cache):
    photos = synthetic.default_dataset(size=40, seed=1)
    crops = eye_crops(tmp_path / "crops", seed=2)
    missing = config.load(str(experiment_file(tmp_path, [{"source": str(photos)},
                                                         {"source": str(tmp_path / "nowhere")}])))
    with pytest.raises(DataError, match=r"data\[1\] \(nowhere.*not found"):
        experiment.gather(missing)
    (tmp_path / "exp" / "two-sets.yaml").unlink()
    (tmp_path / "exp").rmdir()
    pd.read_csv(crops / "labels.csv").drop(columns="eyes").to_csv(crops / "labels.csv", index=False)
    unlabelled = config.load(str(experiment_file(tmp_path, [{"source": str(photos)}, {"source": str(crops)}])))
    with pytest.raises(DataError, match=r"data\[1\] \(crops.*no `eyes` label"):
        experiment.gather(unlabelled)


# --- the subject-face rule ---------------------------------------------------------------------------

def face(x0, y0, side, confidence=0.99):
    return {"box": [x0, y0, x0 + side, y0 + side], "confidence": confidence, "keypoints": {}}


@pytest.mark.parametrize("found, subject", [
    ([face(10, 10, 40), face(60, 60, 120)], 1),        # 9x the area of the other: the largest
    ([face(70, 60, 100), face(0, 0, 90)], 0),          # similar sizes: the one over the centre
    ([face(0, 0, 100), face(100, 90, 90)], 1),         # ... even when it is the smaller of the two
    ([face(20, 20, 100), face(150, 150, 5, confidence=0.5)], 0),   # unconfident faces do not count
])
def test_the_subject_is_the_dominant_or_the_centred_face(found, subject):
    chosen = faces.choose_face({"size": [250, 250], "faces": found})
    assert chosen["box"] == found[subject]["box"]
    assert chosen[faces.FACES] == sum(f["confidence"] >= faces.MIN_CONFIDENCE for f in found)


@pytest.mark.parametrize("found", [
    [face(0, 0, 100), face(150, 150, 100)],            # similar, neither over the centre
    [face(60, 60, 100), face(80, 80, 100)],            # similar, both over the centre
    [face(0, 0, 100), face(150, 150, 95), face(110, 110, 30)],   # the one over the centre is small
])
def test_a_truly_ambiguous_photo_is_refused(found):
    with pytest.raises(faces.SeveralFaces, match=f"{len(found)} faces of similar size"):
        faces.choose_face({"size": [250, 250], "faces": found})


def two_faces() -> Image.Image:
    """Two real LFW portraits pasted on one canvas: one over the centre, one beside it of similar size."""
    folder = shared_data("lfw-attributes")
    names = pd.read_csv(folder / "labels.csv")["path"][:2]
    canvas = Image.new("RGB", (500, 300), (128, 128, 128))
    canvas.paste(Image.open(folder / names[0]).resize((200, 200)), (150, 50))    # the centre
    canvas.paste(Image.open(folder / names[1]).resize((150, 150)), (340, 140))   # beside it, similar size
    return canvas


def test_the_rule_on_a_photo_with_two_real_faces():
    """The centred face is the subject; MTCNN sees both."""
    boxes = faces.find_regions(two_faces())
    assert boxes[faces.FACES] == "2"
    x0, y0, x1, y1 = parse_box(boxes["face_box"])
    assert x0 < 250 < x1 and y0 < 150 < y1


# --- the aspect-ratio baselines --------------------------------------------------------------------------

def drawn_face(eye_open: float, mouth_open: float) -> np.ndarray:
    """68 points with eyes 30 px wide opened `eye_open` px and inner lips 40 px wide opened `mouth_open` px."""
    points = np.zeros((68, 2))
    for first, x in ((36, 60.0), (42, 130.0)):   # p1 corner, p2 p3 top, p4 corner, p5 p6 bottom
        points[first:first + 6] = [(x, 100), (x + 10, 100 - eye_open / 2), (x + 20, 100 - eye_open / 2),
                                   (x + 30, 100), (x + 20, 100 + eye_open / 2), (x + 10, 100 + eye_open / 2)]
    top = [(110, 200 - mouth_open / 2), (120, 200 - mouth_open / 2), (130, 200 - mouth_open / 2)]
    bottom = [(130, 200 + mouth_open / 2), (120, 200 + mouth_open / 2), (110, 200 + mouth_open / 2)]
    points[60:68] = [(100, 200), *top, (140, 200), *bottom]
    return points


def test_aspect_ratios_of_drawn_landmarks():
    assert landmarks.eye_aspect_ratio(drawn_face(9, 0)) == pytest.approx(9 / 30)
    assert landmarks.eye_aspect_ratio(drawn_face(1.5, 0)) == pytest.approx(0.05)
    winking = drawn_face(9, 0)
    winking[42:48, 1] = 100   # the eye on the image's right shut
    assert landmarks.eye_aspect_ratio(winking, "left") == pytest.approx(0.3)
    assert landmarks.eye_aspect_ratio(winking, "right") == pytest.approx(0.0)
    assert landmarks.mouth_aspect_ratio(drawn_face(9, 0)) == pytest.approx(0.0)
    assert landmarks.mouth_aspect_ratio(drawn_face(9, 30)) == pytest.approx(30 / 40)


def test_landmarks_read_open_and_closed_eyes_of_real_faces():
    """dlib's 68 points on whole faces: closed eyes of eyes-whole read a lower EAR than open ones."""
    require_face_features()
    folder = shared_data("eyes-whole")
    frame = pd.read_csv(folder / "labels.csv")
    ratios = {}
    for eyes in (0.0, 1.0):
        ratios[eyes] = []
        for path in frame.loc[frame["eyes"] == eyes, "path"][:8]:
            image = Image.open(folder / path).convert("RGB")
            try:
                box = faces.find_regions(image)["face_box"]
            except faces.NoFace:   # ~3% of eyes-whole: MTCNN finds no face
                continue
            ratios[eyes].append(landmarks.eye_aspect_ratio(landmarks.landmarks(np.asarray(image), box)))
    assert len(ratios[0.0]) >= 5 and len(ratios[1.0]) >= 5
    assert np.median(ratios[0.0]) < np.median(ratios[1.0])


# --- eyes-photo end to end on small parts of the shared sets ----------------------------------------------

@pytest.mark.slow
def test_eyes_photo_trains_on_close_ups_and_whole_faces_and_is_judged_on_held_out_photos(mlflow_store):
    from faceattr import promotion

    for name in ("eye-state", "eyes-whole", "lfw-attributes"):
        shared_data(name)
    require_face_features()
    cfg = config.load("eyes-photo", {"epochs": 2, "train.verbose": 0})
    for entry in cfg["data"]["sets"]:
        entry["size"] = 60   # small parts: the landmark cut runs MTCNN on every whole photo once (cached)
    outcome = experiment.train(cfg, register=True)
    metrics = outcome.metrics
    for name in ("eye-state", "eyes-whole", "lfw-attributes"):
        assert f"val_photos.slice.set.{name}" in metrics
    # the eye aspect ratio reads real eyes: far better than a coin on eyes-whole's open and closed faces
    assert metrics["val_landmark_baseline_accuracy.slice.set.eyes-whole"] >= 0.6
    assert "val_landmark_baseline_accuracy.slice.set.eyes-whole" in metrics
    assert "val_landmark_baseline_accuracy.slice.set.eye-state" not in metrics   # close-ups: no landmarks

    # `faceattr promote eyes-photo`: the held-out whole photos of the same small parts, through the served model
    result = promotion.promote("eyes-photo", dry_run=True)
    assert result.challenger_metrics["photos_n"] > 0
    assert result.challenger_metrics["photos_scored_share"] >= 0.9   # held-out portraits: nearly all answered
    assert any("test_landmark_baseline_accuracy" in e for e in result.decision.evidence)


def test_promotion_requires_beating_the_landmark_baseline_on_every_set():
    from faceattr import promotion

    policy = promotion.Policy.load("eyes-photo")
    judged = {"accuracy_at_0_5": 0.97, "baseline_ratio": 3.0, "collapsed": False, "photos_accuracy": 0.98,
              "photos_scored_share": 0.99}
    slices = {("set", "lfw-attributes"): (0.97, 300)}
    trained = {"test_accuracy_at_0_5": 0.97, "test_landmark_baseline_accuracy": 0.90,
               "test_accuracy_at_0_5.slice.set.lfw-attributes": 0.97,
               "test_landmark_baseline_accuracy.slice.set.lfw-attributes": 0.95,
               "test_accuracy_at_0_5.slice.set.eyes-whole": 0.93,
               "test_landmark_baseline_accuracy.slice.set.eyes-whole": 0.94}
    decision = promotion.decide(policy, judged, None, slices, trained)
    assert decision.reasons == ["test_accuracy_at_0_5.slice.set.eyes-whole 0.93 does not beat the training-free "
                                "test_landmark_baseline_accuracy.slice.set.eyes-whole 0.94"]
    trained["test_accuracy_at_0_5.slice.set.eyes-whole"] = 0.95
    assert promotion.decide(policy, judged, None, slices, trained).promote
    assert not promotion.decide(policy, judged, None, slices, {}).promote   # nothing to compare: refused


def test_the_served_answer_says_how_many_faces_a_photo_shows(tmp_path):
    from faceattr import models, record
    from faceattr.serving import FaceattrModel
    from faceattr.serving.batch import score

    cfg = config.load("eyes-photo")
    model = FaceattrModel()   # an untrained eyes-photo model, as load_context builds it (no MLflow needed)
    model.record = record.make(cfg)
    model.model, model.gender_model = models.build(cfg), None
    two_faces().save(tmp_path / "two.png")
    one = shared_data("lfw-attributes") / pd.read_csv(shared_data("lfw-attributes") / "labels.csv")["path"][5]
    rows = pd.DataFrame({"path": [str(tmp_path / "two.png"), str(one), str(tmp_path / "two.png")],
                         "kind": ["photo", "photo", "crop"]})
    out, _ = score(model, rows, progress=False)
    assert out["error"].isna().all()
    assert out["pred_faces"].tolist()[:2] == [2, 1]   # two drawn faces; Aaron_Pena_0001 shows one (looked at)
    assert pd.isna(out["pred_faces"][2])   # a crop: no face was searched
