"""A bundle end to end (issue 28, slow): bundle -> promote -> `mlflow models serve` -> a JSON request of two
photos, one faceless, parsed by Chromium's JSON.parse; and the same bundle through `faceattr predict
--engine spark`, its faces_found as JSON text in the Parquet."""

from __future__ import annotations

import base64
import json
import os

import pandas as pd
import pytest
import yaml
from helpers import require, shared_data, subprocess_env
from test_browser import browser, post_from_the_browser  # noqa: F401 (browser: the fixture)
from test_bundle import MEMBERS, SYNTHETIC, _train, photos
from test_serving import serve
from test_spark import have_spark

from faceattr import bundling, config, registry


def _bundle(tmp_path) -> str:
    """The members trained and made champions, bundled and promoted by a policy on 4 UTKFace photos."""
    _train("gender", {"model.backbone": "dlib-resnet"})
    _train("eyes")
    _train("mouth")
    _train("glasses", SYNTHETIC)
    made = bundling.make("faces", MEMBERS)
    policy_file = tmp_path / "faces.yaml"
    policy_file.write_text(yaml.safe_dump({"bundle": {"photos": str(shared_data("utkface-gender")), "size": 4}}))
    outcome = bundling.promote("faces", made.version, config.Policy.load("faces", policy_file))
    assert outcome["promoted"], outcome["reasons"]
    assert str(registry.champion("faces").version) == str(made.version)
    return str(made.version)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_promoted_bundle_is_served_and_its_answer_is_json_to_the_browser(mlflow_store, synthetic_cache, tmp_path,
                                                                          browser):  # noqa: F811
    _bundle(tmp_path)
    shots = photos()
    body = json.dumps({"dataframe_records": [
        {"image": base64.b64encode(shots["big_small"]).decode(), "kind": "photo"},
        {"image": base64.b64encode(shots["none"]).decode(), "kind": "photo"}]})
    proc, port = serve("models:/faces@champion", tmp_path, subprocess_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_store),
                       tmp_path / "serve.log")
    try:
        answer = post_from_the_browser(browser.new_page(viewport={"width": 900, "height": 200}), port, body)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    assert answer["status"] == 200, answer["text"]
    assert "error" not in answer, f"JSON.parse refused the answer: {answer['error']}: {answer['text']}"
    faces_row, faceless = answer["parsed"]["predictions"]
    assert faces_row["error"] is None and faces_row["faces"] == 2 and isinstance(faces_row["eyes"], float)
    assert [f["subject"] for f in faces_row["faces_found"]] == [True, False]
    assert faces_row["faces_found"][0]["gender"] == faces_row["gender"]
    assert "no face" in faceless["error"] and faceless["faces_found"] == [] and faceless["eyes"] is None


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_bundle_on_spark_writes_faces_found_as_json_text(mlflow_store, synthetic_cache, tmp_path):
    require(have_spark(), "pyspark or Java is missing (pip install -e '.[spark]'; apt-get install "
                          "openjdk-17-jre-headless)")
    from faceattr.serving import spark

    version = _bundle(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in photos().items():
        (folder / f"{name}.png").write_bytes(data)
    out = tmp_path / "out.parquet"
    spark.predict(str(folder), f"models:/faces/{version}", str(out), kind="photo", master="local[1]", batch_size=4)
    table = pd.read_parquet(out)
    table.index = [p.rsplit("/", 1)[-1][:-4] for p in table["path"]]
    found = json.loads(table.loc["big_small", "pred_faces_found"])
    assert [f["subject"] for f in found] == [True, False]
    assert table.loc["big_small", "pred_eyes"] == pytest.approx(found[0]["eyes"])
    assert "no face" in table.loc["none", "error"]
