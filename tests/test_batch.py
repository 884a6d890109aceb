"""Batch scoring on one machine (faceattr/serving/batch.py): chunks of batch_size, worker processes that
load the model once each, one row per input with an `error` for the files it cannot answer, the input's
columns kept beside the `pred_*` answers."""

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr import config, models, record
from faceattr import tracking as tracking_module
from faceattr.cli import main
from faceattr.errors import DataError
from faceattr.serving import FaceattrModel, batch, image_bytes
from faceattr.serving import model as served_module


def eyes_model() -> FaceattrModel:
    """An untrained eyes model as load_context builds it, its answers inside 0..1 (where the clip keeps them)."""
    cfg = config.load("eyes")
    model = FaceattrModel()
    model.record, model.model, model.gender_model = record.make(cfg), models.build(cfg), None
    model.model.get_layer("dense_final").bias.assign([0.5])
    model.warm_up()
    return model


def logged_eyes_model() -> str:
    """The same, logged as the served model (in the test's tracking store): its URI."""
    cfg = config.load("eyes")
    keras_model = models.build(cfg)
    keras_model.get_layer("dense_final").bias.assign([0.5])
    example = pd.DataFrame([{"image": image_bytes(np.zeros((32, 60, 3), np.uint8)), "kind": "crop"}])
    with tracking_module.start_run("eyes-untrained") as run:
        return run.log_model(keras_model, cfg, example).model_uri


def crops(folder, n: int, start: int = 0) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(start, start + n):
        pixels = np.random.default_rng(i).integers(0, 255, (32, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"c{i:02d}.png")
        paths.append(str(folder / f"c{i:02d}.png"))
    return paths


def test_chunks_of_batch_size_answer_like_one_photo_at_a_time(tmp_path, monkeypatch):
    model = eyes_model()
    paths = crops(tmp_path / "photos", 4)
    (tmp_path / "photos" / "c01x.png").write_bytes(b"")                 # sorts third: an empty file
    calls = []
    real = model.answer_photos
    monkeypatch.setattr(model, "answer_photos", lambda inputs, gender=None, faces=None: calls.append(len(inputs)) or
                        real(inputs, gender, faces))
    rows = batch.list_inputs(tmp_path / "photos")
    chunked, profile = batch.score(model, rows, batch_size=2, progress=False)
    assert calls == [2, 1, 1]                                  # one predict per chunk, the empty file left out
    alone = [model.predict_arrays(np.asarray(Image.open(p))[None].astype(np.float32))["eyes"][0] for p in paths]
    answered = chunked[chunked["error"].isna()]
    assert list(answered["path"]) == paths
    np.testing.assert_allclose(answered["pred_eyes"].astype(float), alone, atol=1e-6)
    assert "non-empty bytes" in chunked["error"][2] and pd.isna(chunked["pred_eyes"][2])
    assert set(profile) == {*batch.STAGES, "wall"} and profile["decode"] > 0 and profile["predict"] > 0


def test_every_bad_file_becomes_an_error_row_with_its_reason_and_the_rest_are_answered(tmp_path, monkeypatch):
    model = eyes_model()
    good = crops(tmp_path, 2)
    jpeg = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(9).integers(0, 255, (32, 60, 3), dtype=np.uint8)).save(jpeg)
    (tmp_path / "truncated.jpg").write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    Image.new("RGB", (200, 200), (120, 120, 120)).save(tmp_path / "blank.png")        # a photo without a face
    big = np.random.default_rng(1).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")                                   # ~470 KB: over 0.1 MB
    monkeypatch.setattr(served_module, "MAX_IMAGE_MB", 0.1)
    manifest = pd.DataFrame({"path": [good[0], "truncated.jpg", "blank.png", "big.png", "gone.png", good[1]],
                             "kind": ["crop", "crop", "photo", "crop", "crop", "crop"]})
    manifest.to_csv(tmp_path / "m.csv", index=False)
    out, _ = batch.score(model, batch.list_inputs(tmp_path / "m.csv"), batch_size=4, progress=False)
    assert len(out) == 6
    reasons = dict(zip(out["path"].map(os.path.basename), out["error"]))
    assert reasons["c00.png"] is None and reasons["c01.png"] is None
    assert "unreadable image" in reasons["truncated.jpg"] and "truncated" in reasons["truncated.jpg"]
    assert "no face" in reasons["blank.png"]
    assert "limit is 0.1 MB per photo" in reasons["big.png"]
    assert "cannot read file" in reasons["gone.png"]
    assert out["pred_eyes"].notna().tolist() == [True, False, False, False, False, True]


def test_the_inputs_columns_are_kept_beside_answers_that_cannot_collide(tmp_path, monkeypatch, capsys):
    model = eyes_model()
    paths = crops(tmp_path, 3)
    labels = pd.DataFrame({"path": [os.path.basename(p) for p in paths], "eyes": [0.0, 1.0, 0.5],
                           "mouth": ["a", "b", "c"]})
    labels.to_parquet(tmp_path / "labels.parquet")
    out, _ = batch.score(model, batch.list_inputs(tmp_path / "labels.parquet"), progress=False)
    assert list(out.columns) == ["path", "eyes", "mouth", "kind", "pred_eyes", "pred_faces", "error"]
    assert list(out["eyes"]) == [0.0, 1.0, 0.5] and list(out["mouth"]) == ["a", "b", "c"]   # the labels, as given
    # each row keeps its own photo's answer (the rows are not reordered by the chunking or the labels)
    alone = model.predict(None, pd.DataFrame({"image": [open(p, "rb").read() for p in paths], "kind": "crop"}))
    np.testing.assert_allclose(out["pred_eyes"].astype(float), alone["eyes"].astype(float), atol=1e-6)

    labels.assign(error="x").to_csv(tmp_path / "taken.csv", index=False)
    with pytest.raises(DataError, match=r"taken.csv: column 'error' would collide"):
        batch.list_inputs(tmp_path / "taken.csv")
    labels.rename(columns={"path": "file"}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(DataError, match=r"nopath.csv: a manifest needs a `path` column"):
        batch.list_inputs(tmp_path / "nopath.csv")


def test_workers_answer_like_one_process_and_each_loads_the_model_once(module_mlflow_store, tmp_path, monkeypatch,
                                                                       capsys):
    uri = logged_eyes_model()
    crops(tmp_path / "photos", 9)
    monkeypatch.setenv(served_module.LOAD_LOG, str(tmp_path / "loads"))
    out = tmp_path / "preds.parquet"
    assert main(["predict", str(tmp_path / "photos"), "--model", uri, "--out", str(out), "--batch-size", "2",
                 "--workers", "2", "--profile"]) == 0
    printed = capsys.readouterr().out
    assert "scored 9 of 9 photos" in printed and "ms/photo" in printed and "detect" in printed
    loads = os.listdir(tmp_path / "loads")
    pids = {name.split("-")[0] for name in loads}
    assert len(loads) == 2 and len(pids) == 2 and str(os.getpid()) not in pids   # 5 chunks, 2 workers: 2 loads
    pooled = pd.read_parquet(out)
    alone, _ = batch.score(mlflow.pyfunc.load_model(uri).unwrap_python_model(),
                           batch.list_inputs(tmp_path / "photos"), progress=False)
    np.testing.assert_allclose(pooled["pred_eyes"].astype(float), alone["pred_eyes"].astype(float), atol=1e-6)


def test_the_served_model_loads_its_keras_models_once_per_process(module_mlflow_store, tmp_path, monkeypatch):
    uri = logged_eyes_model()
    monkeypatch.setenv(served_module.LOAD_LOG, str(tmp_path / "loads"))
    first = mlflow.pyfunc.load_model(uri)          # spark_udf (env_manager local) loads the pyfunc per task
    second = mlflow.pyfunc.load_model(uri)
    loads = os.listdir(tmp_path / "loads")
    assert len(loads) == 1 and loads[0].startswith(f"{os.getpid()}-")
    assert first.unwrap_python_model().model is second.unwrap_python_model().model


# --- whole photos: the faces of a chunk are found together -------------------------------------------

def eyes_photo_model() -> FaceattrModel:
    """An untrained eyes-photo model (it reads whole photos), as load_context builds it."""
    cfg = config.load("eyes-photo")
    model = FaceattrModel()
    model.record, model.model, model.gender_model = record.make(cfg), models.build(cfg), None
    return model


def portraits(folder) -> list[str]:
    """Six UTKFace portraits (200x200), a faceless 200x200 photo, and a portrait at 150x150 (another size)."""
    from helpers import shared_data

    utk = shared_data("utkface-gender")
    folder.mkdir()
    paths = [str(utk / p) for p in pd.read_csv(utk / "labels.csv")["path"][:6]]
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "faceless.png")
    Image.open(paths[0]).convert("RGB").resize((150, 150)).save(folder / "small.png")
    return [*paths, str(folder / "faceless.png"), str(folder / "small.png")]


class DetectorSpy:
    """MTCNN as faces.detector() gives it, recording how many photos each call held; `fails_on` (a photo
    size) makes a call holding such a photo raise, as MTCNN might on an odd photo."""

    def __init__(self, fails_on=None):
        from faceattr.data import faces

        self.real, self.calls, self.fails_on = faces.detector(), [], fails_on

    def detect_faces(self, images, **kwargs):
        self.calls.append(len(images))
        if self.fails_on and any(i.shape[:2] == self.fails_on for i in images):
            raise ValueError("odd photo")
        return self.real.detect_faces(images, **kwargs)


def test_a_chunks_whole_photos_are_detected_together_and_answered_like_one_at_a_time(tmp_path, monkeypatch):
    from faceattr.data import faces

    model = eyes_photo_model()
    paths = portraits(tmp_path / "photos")
    rows = pd.DataFrame({"path": paths, "kind": "photo"})
    alone = [model.read_all([open(p, "rb").read()], ["photo"])[0] for p in paths]
    spy = DetectorSpy()
    monkeypatch.setattr(faces, "detector", lambda: spy)
    out, _ = batch.score(model, rows, progress=False)
    assert sorted(spy.calls) == [1, 7]                  # one MTCNN call per size in the chunk, not one per photo
    assert list(out["error"].notna()) == [False] * 6 + [True, False]
    assert "no face" in out["error"][6]                 # the faceless photo keeps its own reason
    expected = [model.answer_reads(rows.iloc[[i]], [found])["eyes"][0] for i, found in enumerate(alone)]
    np.testing.assert_allclose(out["pred_eyes"][out["error"].isna()].astype(float),
                               [e for e in expected if e is not None], atol=1e-6)
    # the served model reads a request's photos the same way: one call for the six portraits and the blank
    spy.calls.clear()
    request = pd.DataFrame({"image": [open(p, "rb").read() for p in paths[:7]], "kind": "photo"})
    served = model.predict(None, request)
    assert spy.calls == [7] and list(served["error"].notna()) == [False] * 6 + [True]
    # a call holds at most MAX_BATCH_PIXELS: 3 photos of 200x200 here
    spy.calls.clear()
    monkeypatch.setattr(faces, "MAX_BATCH_PIXELS", 3 * 200 * 200)
    model.read_all([open(p, "rb").read() for p in paths[:7]], ["photo"] * 7)
    assert spy.calls == [3, 3, 1]
    # a request's photos are held decoded WINDOW_PIXELS at a time: 2 photos here, with the same answers
    spy.calls.clear()
    monkeypatch.setattr(served_module, "WINDOW_PIXELS", 2 * 200 * 200)
    windowed = model.predict(None, request)
    assert spy.calls == [2, 2, 2, 1]
    pd.testing.assert_frame_equal(windowed, served)


def test_a_detector_failure_in_a_batch_fails_only_the_odd_photo(tmp_path, monkeypatch):
    from faceattr.data import faces

    model = eyes_photo_model()
    paths = portraits(tmp_path / "photos")[:6]
    Image.open(paths[1]).convert("RGB").crop((0, 0, 200, 199)).save(tmp_path / "odd.png")   # 200x199: "odd"
    spy = DetectorSpy(fails_on=(199, 200))
    monkeypatch.setattr(faces, "detector", lambda: spy)
    found = model.read_all([open(p, "rb").read() for p in [*paths, str(tmp_path / "odd.png")]], ["photo"] * 7)
    assert [isinstance(f, DataError) for f in found] == [False] * 6 + [True]
    assert "the face detector failed on this photo (ValueError: odd photo)" in str(found[6])


def test_a_photos_boxes_do_not_depend_on_the_photos_batched_beside_it():
    """MTCNN's scores tie (a softmax saturated at 1.0) and its non-maximum suppression keeps the first of a
    tie: with numpy's unstable sort, UTKFace photo 356 got a box a pixel off when batched with photos
    320-383 (its eye answer moved by up to 0.08). faces.detector() installs a stable sort."""
    from helpers import shared_data

    from faceattr.data import faces
    from faceattr.data.regions import load_rgb

    utk = shared_data("utkface-gender")
    paths = pd.read_csv(utk / "labels.csv")["path"][320:384]
    photos = [load_rgb(str(utk / p)) for p in paths]
    batched = faces.detect(photos)[36]
    alone = faces.detect([photos[36]])[0]
    assert [f["box"] for f in alone["faces"]] == [f["box"] for f in batched["faces"]]
