"""`faceattr prepare`: failure reports, crop-only inputs, detection on a real face, the cache, the CLI exit code."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr.data import faces
from faceattr.data.regions import REGION_SIZES, crop_region, parse_box
from faceattr.data.prepare import EXIT_TOO_MANY_FAILURES, prepare
from helpers import shared_data


def _write_bad_photos(folder):
    """corrupt file, grey JPEG (no face), grey-scale PNG, RGBA PNG, huge 6000x4000 photo: none has a face."""
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "images" / "grey.jpg")
    Image.new("L", (150, 150), 90).save(folder / "images" / "greyscale.png")
    Image.new("RGBA", (120, 160), (200, 30, 30, 0)).save(folder / "images" / "rgba.png")
    Image.new("RGB", (6000, 4000), (90, 110, 140)).save(folder / "images" / "huge.png")
    rows = ["corrupt.jpg", "grey.jpg", "greyscale.png", "rgba.png", "huge.png"]
    pd.DataFrame({"path": [f"images/{r}" for r in rows], "gender": ["male", "female", "male", "female", "male"]}
                 ).to_csv(folder / "labels.csv", index=False)


def test_every_bad_photo_is_reported_with_its_reason(tmp_path):
    _write_bad_photos(tmp_path / "in")
    report = prepare(tmp_path / "in", tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert report.total == 5 and report.ok == 0
    reasons = {f["path"].rsplit("/", 1)[-1]: f["reason"] for f in report.failures}
    assert reasons == {"corrupt.jpg": "unreadable", "grey.jpg": "no face", "greyscale.png": "no face",
                       "rgba.png": "no face", "huge.png": "no face"}
    written = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert sorted(written["reason"]) == sorted(reasons.values())
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert summary["failed"] == 5 and summary["unreadable"] == 1 and summary["no_face"] == 4


def test_declared_crops_skip_detection_and_keep_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "detect", lambda *a, **k: pytest.fail("crops must not be detected"))
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.new("RGB", (40 + i, 24), (i * 60, 50, 50)).save(tmp_path / "in" / f"{i}.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    pd.DataFrame({"path": ["0.png", "1.png", "2.png", "broken.png"], "eyes": [1.0, 0.0, 1.0, 0.0]}
                 ).to_csv(tmp_path / "in" / "labels.csv", index=False)
    report = prepare(tmp_path / "in" / "labels.csv", tmp_path / "out", image_region="eyes", progress=False,
                     cache_dir=tmp_path / "cache")
    assert (report.ok, [f["reason"] for f in report.failures]) == (3, ["unreadable"])
    table = pd.read_csv(tmp_path / "out" / "eyes" / "labels.csv")
    assert list(table["eyes"]) == [1.0, 0.0, 1.0] and set(table["image_region"]) == {"eyes"}
    crop = Image.open(tmp_path / "out" / "eyes" / table["path"][0])
    assert crop.size == (60, 32)
    assert not (tmp_path / "out" / "face" / "labels.csv").exists()


def test_cli_exit_code_follows_the_failure_share(tmp_path, mlflow_store):
    from faceattr.cli import main

    import mlflow

    _write_bad_photos(tmp_path / "in")
    args = ["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == EXIT_TOO_MANY_FAILURES
    assert mlflow.search_experiments() == [] or [e.name for e in mlflow.search_experiments()] == ["Default"]
    assert mlflow.search_runs(search_all_experiments=True).empty   # no MLflow run unless asked for
    tracked = args + ["--experiment", "data-prep"]
    assert main(tracked + ["--max-failure-share", "1.01"]) == 0   # cached: no detection the second time
    assert main(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2"), "--experiment", "data-prep"]) == 2
    runs = mlflow.search_runs(experiment_names=["data-prep"])
    done = runs[runs["status"] == "FINISHED"]   # the second, a bad source, is a FAILED run
    assert len(done) == 1 and (done["metrics.photos_failed"] == 5).all() and (runs["status"] == "FAILED").sum() == 1


def test_real_face_boxes_and_cached_rerun(tmp_path, monkeypatch):
    root = shared_data("utkface-gender")
    table = pd.read_csv(root / "labels.csv").head(4)
    table.to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "images").symlink_to(root / "images")  # read in place: the images never enter the repo
    first = prepare(tmp_path / "labels.csv", tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert first.ok == 4, first.failures
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    for _, row in detections.iterrows():
        face, eyes, mouth = (parse_box(row[f"{r}_box"]) for r in ("face", "eyes", "mouth"))
        w, h = Image.open(row["source"]).size
        for x0, y0, x1, y1 in (eyes, mouth):  # eyes and mouth lie inside the photo
            assert 0 <= (x0 + x1) / 2 <= w and 0 <= (y0 + y1) / 2 <= h
            assert x0 > -0.15 * w and x1 < 1.15 * w
        assert (eyes[1] + eyes[3]) / 2 < (mouth[1] + mouth[3]) / 2    # eyes above the mouth
        assert face[0] <= eyes[0] + 1 and face[2] >= eyes[2] - 1 and (face[3] - face[1]) > (mouth[3] - mouth[1])
    assert not (tmp_path / "out" / "eye").exists()    # two crops a photo: region eye reads photo/'s boxes
    for region, (h, w) in ((r, s) for r, s in REGION_SIZES.items() if r != "eye"):
        manifest = pd.read_csv(tmp_path / "out" / region / "labels.csv")
        assert len(manifest) == 4 and list(manifest["gender"]) == list(table["gender"])
        if region != "photo":   # crops faceattr cut: a model trained on them may be served whole photos
            assert set(manifest["cut_by"]) == {"faceattr"}
        assert Image.open(tmp_path / "out" / region / manifest["path"][0]).size == (w, h)
    crops = {p.name: p.read_bytes() for p in (tmp_path / "out" / "mouth").glob("*.png")}

    # the rerun reads the cache: no detection at all (not "fast enough", which depends on the machine)
    monkeypatch.setattr(faces, "detect", lambda *a, **k: pytest.fail("a cached photo was detected again"))
    second = prepare(tmp_path / "labels.csv", tmp_path / "out2", cache_dir=tmp_path / "cache", progress=False)
    assert second.cached == 4 and second.ok == 4
    assert pd.read_csv(tmp_path / "out2" / "detections.csv").equals(detections)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out2" / "mouth").glob("*.png")} == crops


def test_several_faces_policy():
    def face(x, size, conf=0.99):
        return {"box": [x, 0, x + size, size], "confidence": conf, "keypoints": {}}

    assert faces.choose_face({"size": [600, 600], "faces": [face(0, 50), face(100, 120)]})["box"][0] == 100   # clear subject
    with pytest.raises(faces.SeveralFaces):   # similar sizes, neither over the centre (more: test_portraits)
        faces.choose_face({"size": [600, 600], "faces": [face(0, 100), face(200, 110)]})                      # ambiguous
    assert faces.choose_face({"size": [600, 600], "faces": [face(0, 100, 0.5), face(200, 110)]})["box"][0] == 200
    with pytest.raises(faces.NoFace):
        faces.choose_face({"size": [600, 600], "faces": [face(0, 100, 0.5)]})


def test_region_boxes_geometry():
    kp = {"left_eye": [40, 50], "right_eye": [80, 50], "nose": [60, 70], "mouth_left": [45, 90],
          "mouth_right": [75, 90]}
    boxes = {k: parse_box(v) for k, v in faces.region_boxes({"box": [20, 20, 100, 120], "keypoints": kp}).items()}
    x0, y0, x1, y1 = boxes["eyes_box"]
    assert (x0 + x1) / 2 == pytest.approx(60) and (y0 + y1) / 2 == pytest.approx(50)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(60 / 32) and x1 - x0 == pytest.approx(72)
    mx0, my0, mx1, my1 = boxes["mouth_box"]
    assert mx1 - mx0 == pytest.approx(my1 - my0) and (mx0 + mx1) / 2 == pytest.approx(60)
    fx0, fy0, fx1, fy1 = boxes["face_box"]
    assert fx1 - fx0 == pytest.approx(115) and (fy0 + fy1) / 2 == pytest.approx(70)
    assert np.isfinite([*boxes["face_box"], *boxes["eyes_box"]]).all()


# The squares worked out by hand. Level: D = 40, side 30, centres raised 1.5 px. Tilted (the right eye
# 30 px up and right): D = 42.43, side 31.82, centres moved 1.59 px along (-1, -1)/sqrt(2), up and left.
LEVEL = {"eye_left_box": (25, 33.5, 55, 63.5), "eye_right_box": (65, 33.5, 95, 63.5)}
TILTED = {"eye_left_box": (22.9651, 42.9651, 54.7849, 74.7849),
          "eye_right_box": (52.9651, 12.9651, 84.7849, 44.7849)}


@pytest.mark.parametrize("left, right, expected", [((40, 50), (80, 50), LEVEL), ((40, 60), (70, 30), TILTED)],
                         ids=["level", "tilted"])
def test_mtcnn_cuts_each_eye_in_its_own_square_raised_towards_the_brow(left, right, expected, monkeypatch):
    """MTCNN's eye keypoints -> `eye_left_box` around the image's left eye and `eye_right_box` around the
    other: squares of side 0.75 D (D: the distance between the eyes), their centres moved 0.05 side
    perpendicular to the eye line, towards the brow; and the served cut of a photo (find_regions, then
    cut) crops exactly those squares, left eye first."""
    keypoints = {"left_eye": list(left), "right_eye": list(right), "nose": [60, 70], "mouth_left": [45, 95],
                 "mouth_right": [75, 95]}
    face = {"box": [20, 20, 100, 120], "confidence": 0.99, "keypoints": keypoints}
    boxes = {k: parse_box(v) for k, v in faces.region_boxes(face).items()}
    for name, box in expected.items():
        assert boxes[name] == pytest.approx(box, abs=0.01), name

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (140, 120, 3), dtype=np.uint8))
    monkeypatch.setattr(faces, "detect", lambda images: [{"size": list(photo.size), "faces": [face]}])
    cuts = faces.cut(photo, "eye", faces.find_regions(photo))
    by_hand = [crop_region(photo, "eye", tuple(round(v, 2) for v in expected[name]))
               for name in ("eye_left_box", "eye_right_box")]
    assert cuts.shape == (2, *REGION_SIZES["eye"], 3) and not np.array_equal(*by_hand)
    assert np.array_equal(cuts, np.stack(by_hand))


@pytest.mark.parametrize("gap, answered", [(17, True), (15, False)], ids=["big-enough", "tiny"])
def test_a_whole_photo_whose_face_is_too_small_for_the_crop_gets_an_error_row(gap, answered, monkeypatch):
    """An eye's box is 0.75 of the eye gap: 12.75 px at a 17 px gap (answered), 11.25 px at 15 px, under the
    12 x 12 px minimum for the 48 x 48 `eye` crop: that photo's row says so and gets no value, the other
    row of the request is answered. Seen to fail with faces.cut not calling check_cut_size, and with
    MIN_CUT_SHARE 0.3."""
    from faceattr import config, models, record
    from faceattr.serving import FaceattrModel, image_bytes

    cfg = config.load("eyes-photo")
    model = FaceattrModel()   # an untrained eyes-photo model, as load_context builds it (no MLflow needed)
    model.record, model.model, model.gender_model = record.make(cfg), models.build(cfg), None
    keypoints = {"left_eye": [60, 60], "right_eye": [60 + gap, 60], "nose": [80, 80], "mouth_left": [65, 100],
                 "mouth_right": [95, 100]}
    face = {"box": [40, 30, 80, 100], "confidence": 0.99, "keypoints": keypoints}
    monkeypatch.setattr(faces, "detect", lambda images: [{"size": list(im.size), "faces": [face]} for im in images])
    photo = image_bytes(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    out = model.predict(None, pd.DataFrame({"image": [photo, crop_bytes()], "kind": ["photo", "crop"]}))
    assert out["eyes"][1] is not None and out["error"][1] is None          # the crop beside it: answered
    if answered:
        assert out["error"][0] is None and out["eyes"][0] is not None
    else:
        assert out["eyes"][0] is None
        assert out["error"][0] == "the face is too small: its eye is 11.2 x 11.2 px, under the 12 x 12 px " \
                                  "minimum (a quarter of the model's 48 x 48 crop)"


def crop_bytes() -> bytes:
    from faceattr.serving import image_bytes

    return image_bytes(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8))
