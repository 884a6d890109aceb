"""The served model: photos in, values out; bad requests are 4xx; batch scoring; and the whole
train -> promote -> `mlflow models serve` path end to end."""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import require_mlflow_serve, shared_data, wait_for_port
from mlflow.exceptions import MlflowException
from PIL import Image

from faceattr import config, experiment, models, record, registry, tasks
from faceattr import promotion as promote
from faceattr import tracking
from faceattr.cli import main
from faceattr.serving import FaceattrModel, encode_image, image_bytes

REPO = Path(__file__).resolve().parents[1]


def served(name="eyes"):
    """A FaceattrModel around an untrained model, as load_context builds it (no MLflow needed)."""
    cfg = config.load(name)
    model = FaceattrModel()
    model.record = record.make(cfg)
    model.model, model.gender_model = models.build(cfg), None
    model.warm_up()
    return model


def crop(h=32, w=60, seed=0, fmt="PNG"):
    return encode_image(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8), fmt)


def test_photos_in_values_out_and_the_predict_is_compiled_once():
    model = served("eyes")
    traces = model.model.predict_function.experimental_get_tracing_count()
    model.model.get_layer("dense_final").bias.assign([0.5])   # answers inside 0..1, where the clip keeps them
    photos = [crop(), crop(50, 90, 1, "JPEG")]
    out = model.predict(None, pd.DataFrame({"image": photos, "kind": "crop",
                                            "gender": ["female", None], "p_female": [None, 0.3]}))
    assert list(out.columns) == ["eyes", "faces", "error"] and len(out) == 2 and list(out["error"]) == [None, None]
    # the values are the Keras model's on the crops resized to the region, with each row's gender input
    # ([p_male, p_female]), clipped to 0..1
    from faceattr.data.regions import crop_region, load_rgb

    crops = np.stack([crop_region(load_rgb(base64.b64decode(p)), "eyes") for p in photos]).astype(np.float32)
    raw = model.model.predict_on_batch({"image": crops, "gender": np.array([[0, 1], [0.7, 0.3]], np.float32)})
    assert ((raw > 0) & (raw < 1)).all()
    assert np.allclose(out["eyes"], tasks.TASKS["regression"].scores(raw), atol=1e-6)
    swapped = model.model.predict_on_batch({"image": crops, "gender": np.array([[1, 0], [0.3, 0.7]], np.float32)})
    assert not np.isclose(raw, swapped, atol=1e-6).any()      # so the check above tells the genders apart
    for n in (3, 7, 32):
        assert len(model.predict_arrays(np.zeros((n, 32, 60, 3)))) == n
    # warm-up traced batch sizes 1 and 2; every later size reuses the shape-relaxed trace
    assert model.model.predict_function.experimental_get_tracing_count() == traces
    gender = served("gender").predict(None, pd.DataFrame({"image": [crop(60, 60)]}))
    assert list(gender.columns) == ["p_female", "gender", "faces", "error"] and gender["gender"][0] in ("male", "female")
    as_bytes = model.predict(None, pd.DataFrame({"image": [base64.b64decode(p) for p in photos], "kind": "crop",
                                                 "gender": ["female", None], "p_female": [None, 0.3]}))
    assert as_bytes.equals(out)        # a binary column (Python, Spark) answers as its base64 does


@pytest.mark.parametrize("rows, message", [
    ([], "no photos"),
    ([{"img": "x"}], "needs an `image`"),
    ([{"image": crop()}] * 1025, "at most 1024 per request"),
])
def test_requests_wrong_as_a_whole_are_400(rows, message):
    with pytest.raises(MlflowException, match=message) as info:
        served("eyes").predict(None, pd.DataFrame(rows))
    assert info.value.get_http_status_code() == 400


@pytest.mark.parametrize("row, message", [
    ({"image": "not base64!"}, "not base64"),
    ({"image": base64.b64encode(b"hello, not a picture").decode()}, "not a JPEG/PNG photo"),
    ({"image": b"hello, not a picture"}, "not a JPEG/PNG photo"),
    ({"image": "A" * (12 * 2**20)}, "limit is 8 MB per photo"),
    ({"image": crop(), "kind": "photo"}, "no face"),
    ({"image": crop(), "kind": "sketch"}, "use one of crop, photo"),
    ({"image": crop(), "gender": "other"}, "use male or female"),
    ({"image": None}, "non-empty bytes"),
])
def test_a_bad_row_gets_its_reason_and_the_others_their_answers(row, message):
    """Row by row: the bad row's `error` says what is wrong and its values are None (JSON null); the
    good rows around it are answered as they are alone."""
    model = served("eyes")
    good = {"image": crop(), "gender": "female"}
    out = model.predict(None, pd.DataFrame([good, row, good]))
    alone = model.predict(None, pd.DataFrame([good]))
    assert list(out.columns) == ["eyes", "faces", "error"]
    assert out["error"][0] is None and out["error"][2] is None and message in out["error"][1]
    assert out["eyes"][1] is None and out["eyes"][0] == out["eyes"][2] == pytest.approx(alone["eyes"][0], abs=1e-5)
    answer = json.loads(out.to_json(orient="records"))
    assert answer[1]["eyes"] is None


def test_missing_values_are_null_in_the_json_answer():
    """A model of region `eye` (each eye cut from a whole photo) given a ready crop has no left/right
    cut: its eyes_left/eyes_right are None, which the scoring server writes as JSON null (a bare NaN is
    not JSON: a browser's JSON.parse rejects the whole answer)."""
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    cfg = config.load("eyes", {"region": "eye"})
    model = FaceattrModel()
    model.record, model.model, model.gender_model = record.make(cfg), models.build(cfg), None
    out = model.predict(None, pd.DataFrame({"image": [crop(), crop(seed=1)]}))
    assert list(out.columns) == ["eyes", "eyes_left", "eyes_right", "faces", "error"]
    assert out["eyes_left"].tolist() == out["eyes_right"].tolist() == [None, None]
    text = io.StringIO()
    predictions_to_json(out, text)
    assert "NaN" not in text.getvalue()
    assert json.loads(text.getvalue())["predictions"][0]["eyes_left"] is None


def test_whole_photos_are_cropped_like_prepare_and_read_by_the_bundled_gender_model():
    from faceattr.data import faces
    from faceattr.data.regions import crop_region, load_rgb, parse_box

    path = next((shared_data("utkface-gender") / "images").glob("*.jpg"))
    model = served("mouth")
    model.model.get_layer("dense_final").bias.assign([0.5])   # answers inside 0..1, where the clip keeps them
    model.gender_model = models.build(config.load("gender"))
    model.record = model.record.model_copy(update={"gender_reads": "image"})
    raw = path.read_bytes()
    (mouth,), face, _ = model.read(raw, "photo")   # one cut: the mouth
    boxes = faces.find_regions(raw)           # the prepare path: the same boxes, the same crop code
    assert np.array_equal(mouth, crop_region(load_rgb(raw), "mouth", parse_box(boxes["mouth_box"])))
    assert face.shape == (60, 60, 3)
    photo = base64.b64encode(raw).decode()
    gender = model.gender(pd.DataFrame({"image": [photo]}), [face])
    expected = model.gender_model.predict_on_batch({"image": face[None].astype(np.float32)})
    assert np.allclose(gender, expected, atol=1e-5)
    out = model.predict(None, pd.DataFrame({"image": [photo], "kind": ["photo"]}))
    raw = model.model.predict_on_batch({"image": mouth[None].astype(np.float32), "gender": gender})
    assert 0 < raw[0, 0] < 1
    assert np.allclose(out["mouth"], tasks.TASKS["regression"].scores(raw), atol=1e-6)   # the mouth crop, the face's gender


def test_make_request_builds_a_ready_request(tmp_path):
    Image.new("RGB", (60, 32), (200, 150, 120)).save(tmp_path / "a.jpg")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_request.py"), str(tmp_path / "a.jpg")],
                          capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout)["dataframe_records"]
    assert rows[0]["kind"] == "crop"
    assert base64.b64decode(rows[0]["image"]) == (tmp_path / "a.jpg").read_bytes()


def test_predict_cli_scores_a_folder_and_reports_a_corrupt_file(mlflow_store, tmp_path, capsys):
    cfg = config.load("eyes")
    keras_model = models.build(cfg)
    with tracking.start_run("eyes-untrained") as run:
        info = run.log_model(keras_model, cfg, pd.DataFrame([{"image": crop(), "kind": "crop"}]))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 70, 3), 60 * i, np.uint8)).save(photos / f"ok{i}.png")
    (photos / "broken.jpg").write_bytes((photos / "ok0.png").read_bytes()[:40])
    out = tmp_path / "preds.csv"
    # one worker (this process): tests/test_batch.py checks the worker processes; spawning two costs ~10 s
    assert main(["predict", str(photos), "--model", info.model_uri, "--out", str(out), "--batch-size", "2",
                 "--workers", "1"]) == 0
    assert "scored 3 of 4 photos" in capsys.readouterr().out
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["path", "kind", "pred_eyes", "pred_faces", "error"]
    broken = preds[preds["path"].str.endswith("broken.jpg")].iloc[0]
    assert "unreadable image" in broken["error"] and pd.isna(broken["pred_eyes"])
    answered = preds[preds["error"].isna()].sort_values("path")
    assert [os.path.basename(p) for p in answered["path"]] == ["ok0.png", "ok1.png", "ok2.png"]
    logged = FaceattrModel()   # the logged Keras model, served in this process
    logged.record, logged.model, logged.gender_model = record.make(cfg), keras_model, None
    alone = logged.predict(None, pd.DataFrame({"image": [(photos / f"ok{i}.png").read_bytes() for i in range(3)],
                                               "kind": "crop"}))
    np.testing.assert_allclose(answered["pred_eyes"], alone["eyes"].astype(float), atol=1e-6)   # each its own photo's


# --- end to end ------------------------------------------------------------------------------

def post(port, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=data,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def serve(model_uri, cwd, env, log: Path):
    """`mlflow models serve` on port 0 (it binds a free port itself); returns the process and its port."""
    require_mlflow_serve()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                                 "local", "-h", "127.0.0.1", "-p", "0"], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc, wait_for_port(proc, "mlflow models serve", timeout=300, log=log)
    except BaseException:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
        raise


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_promote_refuse_promote_and_serve_production(mlflow_store, synthetic_cache, tmp_path, monkeypatch):
    # mouth learns within a few epochs on 200 photos (eyes needs more), so the versions differ honestly
    lax = promote.Policy(model="mouth", metric="mse", higher_is_better=False,
                         thresholds={"baseline_ratio": {"min": 0.5}}, require_no_collapse=False, margin={"relative": 0.02})
    tiny = {"data.size": 200, "train.verbose": 0}
    first = experiment.train(config.load("mouth", {**tiny, "epochs": 2}))
    assert first.version is not None and str(first.version) == "1"        # train registers a version
    assert promote.promote("mouth", policy=lax).action == "promoted"
    worse = experiment.train(config.load("mouth", {**tiny, "epochs": 1, "learning_rate": 1e-4}))
    refused = promote.promote("mouth", policy=lax)
    assert refused.action == "refused" and refused.exit_code == 3
    assert refused.challenger_metrics["mse"] > refused.champion_metrics["mse"]
    assert refused.champion == "1" and registry.champion("mouth").version in (1, "1")
    tags = mlflow.MlflowClient().get_model_version("mouth", str(worse.version)).tags
    assert tags["faceattr.decision"] == "refused" and "does not beat" in tags["faceattr.reasons"]
    better = experiment.train(config.load("mouth", {**tiny, "epochs": 6}))
    dry = promote.promote("mouth", policy=lax, dry_run=True)
    assert dry.action == "would-promote" and str(registry.champion("mouth").version) == "1"
    won = promote.promote("mouth", policy=lax)
    assert won.action == "promoted", won.summary()
    client = mlflow.MlflowClient()
    production = [v for v in client.search_model_versions("name = 'mouth'") if v.current_stage == "Production"]
    assert [str(v.version) for v in production] == [str(better.version)]
    assert str(registry.champion("mouth").version) == str(better.version)
    tags = client.get_model_version("mouth", str(better.version)).tags
    assert tags[registry.PREVIOUS] == "1" and tags["faceattr.promote_run_id"] == won.run_id
    runs = mlflow.search_runs(experiment_names=["promote-mouth"])
    assert {"metrics.challenger_mse", "metrics.champion_mse"} <= set(runs.columns)

    # serve Production from an empty folder: no repository, no training data needed (that the model carries
    # its own code is shown where faceattr cannot be imported at all: tests/test_smoke.py)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": ""}
    proc, port = serve("models:/mouth/Production", elsewhere, env, tmp_path / "serve.log")
    try:
        frame = experiment.gather(config.load("mouth", tiny)).splits["test"].frame
        photo = Image.open(frame["path"][0])
        from faceattr.data.regions import crop_region, parse_box
        mouth = crop_region(photo, "mouth", parse_box(frame["mouth_box"][0]))
        request = [{"image": encode_image(mouth, "JPEG"), "kind": "crop"}]
        expected = mlflow.pyfunc.load_model(f"models:/mouth/{better.version}").predict(
            pd.DataFrame([{"image": base64.b64decode(request[0]["image"]), "kind": "crop"}]))   # Python: bytes
        status, answer = post(port, {"dataframe_records": request})   # what the promoted version answers
        assert status == 200 and answer == {"predictions": [{"mouth": pytest.approx(expected["mouth"][0], abs=1e-6),
                                                             "faces": None, "error": None}]}
        bad = [(b"{not json", "valid JSON"),                    # wrong as a whole: 4xx
               ({"dataframe_records": [{"img": encode_image(mouth)}]}, "image"),
               ({"dataframe_records": []}, "")]
        for body, message in bad:
            status, text = post(port, body)
            assert 400 <= status < 500 and message in text, (status, text[:500])
        rows = [{"image": base64.b64encode(b"GIF? no").decode()},     # bad rows: answered row by row
                {"image": base64.b64encode(b"A" * (9 * 2**20)).decode()}, request[0]]
        status, answer = post(port, {"dataframe_records": rows})
        assert status == 200, answer
        assert [row["mouth"] is None for row in answer["predictions"]] == [True, True, False]
        assert "not a JPEG/PNG" in answer["predictions"][0]["error"]
        assert "limit is 8 MB per photo" in answer["predictions"][1]["error"]
        status, answer = post(port, {"dataframe_records": [{"image": encode_image(mouth), "kind": "crop"}] * 3})
        assert status == 200 and len(answer["predictions"]) == 3      # still answering
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


def python_without_faceattr(folder: Path) -> Path:
    """The bin/ of a new venv that imports this venv's packages (mlflow, TensorFlow, uvicorn) but not
    faceattr: its .pth names this venv's site-packages, and a folder named in a .pth is not a site
    folder, so faceattr's editable-install .pth there is never run. `mlflow models serve` starts
    `uvicorn` from PATH: this bin/ has one running this python."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next(folder.glob("lib/python*/site-packages"))
    (site / "this_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    uvicorn = folder / "bin" / "uvicorn"
    uvicorn.write_text(f"#!{folder / 'bin' / 'python'}\nfrom uvicorn.main import main\nmain()\n")
    uvicorn.chmod(0o755)
    return folder / "bin"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_model_logged_from_code_is_served_without_pickle_where_faceattr_is_not_installed(mlflow_store, tmp_path):
    """`mlflow models serve` of a freshly logged model, by a python that cannot import faceattr and may not
    unpickle: JSON callers send base64 for the binary `image` column (MLflow decodes it), the answer is
    row by row with null for what is missing, and a request MLflow cannot decode is a 400."""
    from faceattr.tracking import packaging
    from faceattr.tracking.outbox import Recorder

    require_mlflow_serve()
    cfg = config.load("eyes", {"region": "eye"})
    pixels = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    example = pd.DataFrame({"image": [image_bytes(pixels)], "kind": ["crop"], "gender": ["female"]})
    with tracking.start_run("from-code"):
        info = packaging.log_model(Recorder(), models.build(cfg), cfg, example)
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model"))
    expected = mlflow.pyfunc.load_model(local).predict(example)          # bytes in, as Python callers send
    bin_dir = python_without_faceattr(tmp_path / "venv")
    check = subprocess.run([str(bin_dir / "python"), "-c", "import importlib.util as u; print(u.find_spec('faceattr'))"],
                           cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert check.stdout.strip() == "None", check.stdout + check.stderr      # else this test proves nothing
    env = {**os.environ, "PYTHONPATH": "", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bin_dir / "python"), "-m", "mlflow", "models", "serve", "-m", local,
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", "0"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port = wait_for_port(proc, "mlflow models serve", timeout=300, log=log)
        good = {"image": base64.b64encode(image_bytes(pixels)).decode(), "kind": "crop", "gender": "female"}
        noise = {"image": good["image"], "kind": "photo"}                 # a whole photo with no face
        status, answer = post(port, {"dataframe_records": [good, noise]})
        assert status == 200, answer
        first, second = answer["predictions"]
        assert first["eyes"] == pytest.approx(expected["eyes"][0], abs=1e-6) and first["error"] is None
        assert first["eyes_left"] is None and first["eyes_right"] is None      # a ready crop: null, not NaN
        assert second["eyes"] is None and "face" in second["error"]
        status, text = post(port, {"dataframe_records": [{**good, "image": "not base64 at all"}]})
        assert status == 400 and "image" in text, text[:500]
        status, text = post(port, {"dataframe_records": []})
        assert status == 400, text[:500]
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


def test_the_champion_alias_moves_with_the_stage_in_step_and_no_stage_warning(mlflow_store):
    """`models:/eyes@champion` is what callers serve; stage Production is kept in step for
    `models:/eyes/Production`. MLflow warns that stages are deprecated: faceattr silences that only
    around its own stage move (MLflow still warns a caller who moves a stage)."""
    import warnings

    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_text("x", "model/placeholder.txt")
    client.create_registered_model("eyes")
    client.create_model_version("eyes", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        registry.move_champion("eyes", "1")
    assert client.get_model_version_by_alias("eyes", registry.CHAMPION).current_stage == registry.PRODUCTION
    with pytest.warns(FutureWarning):
        client.transition_model_version_stage("eyes", "1", "Archived")


def test_importing_the_served_model_prints_no_type_hint_warning(tmp_path):
    """predict is annotated (model_input: pd.DataFrame), so MLflow has nothing to warn about on import."""
    done = subprocess.run([sys.executable, "-W", "always", "-c", "import faceattr.serving"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "type hint" not in done.stderr.lower(), done.stderr[-2000:]
