"""`faceattr predict --engine spark` (faceattr/serving/spark.py): mlflow's spark_udf on Spark's binaryFile
source answers like the one-machine path, one row per input, the model loaded once per Python worker."""

import os
import shutil
import sys
import types

import pandas as pd
import pytest
from helpers import require, shared_data
from test_batch import crops, logged_eyes_model

from faceattr.errors import DataError, FaceattrError
from faceattr.serving import batch, spark


def have_spark() -> bool:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    java_home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (java_home and os.path.isfile(os.path.join(java_home, "bin", "java"))))


def test_a_missing_pyspark_or_java_is_one_message_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)                 # import pyspark fails
    with pytest.raises(FaceattrError, match=r"needs pyspark.*pip install -e '\.\[spark\]'.*openjdk-17-jre-headless"):
        spark.require_spark()
    monkeypatch.setitem(sys.modules, "pyspark", types.ModuleType("pyspark"))
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(FaceattrError, match=r"needs Java.*apt-get install openjdk-17-jre-headless"):
        spark.require_spark()


def test_a_manifest_without_a_path_column_is_refused_before_spark_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)                 # Spark could not even start
    pd.DataFrame({"file": ["a.jpg"], "eyes": [1.0]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"m.csv: a manifest needs a `path` column"):
        spark.predict(str(tmp_path / "m.csv"), "models:/eyes/1", str(tmp_path / "out.parquet"))


@pytest.mark.timeout(600)
def test_spark_loads_the_model_once_per_python_worker(mlflow_store, tmp_path):
    """local[1], twelve crops and a truncated one in four tasks of 3-4 rows (one Arrow batch each): the one
    Python worker is reused, so the model is loaded once; every crop gets the one-machine path's answer and
    a null `error`, the broken one its reason. Seen to fail (4 loads) with `spark.python.worker.reuse` set to false in spark.session,
    and (an answered row's error "None") without spark.no_error_is_null."""
    require(have_spark(), "pyspark or Java is missing (pip install -e '.[spark]'; apt-get install "
                          "openjdk-17-jre-headless)")
    paths = crops(tmp_path / "crops", 12)
    (tmp_path / "crops" / "c00x.png").write_bytes(open(paths[0], "rb").read()[:60])   # sorts second: truncated
    uri = logged_eyes_model()
    outcome = spark.predict(str(tmp_path / "crops"), uri, str(tmp_path / "out.parquet"), master="local[1]",
                            batch_size=8)
    assert (outcome.rows, outcome.scored, outcome.loads) == (13, 12, 1)
    on_spark = pd.read_parquet(tmp_path / "out.parquet").sort_values("path").reset_index(drop=True)
    alone, _ = batch.score(batch.local_model(uri), batch.list_inputs(tmp_path / "crops"), progress=False)
    alone = alone.sort_values("path").reset_index(drop=True)
    assert on_spark["path"].tolist() == alone["path"].tolist() == sorted([*paths, str(tmp_path / "crops" / "c00x.png")])
    assert on_spark["error"].isna().tolist() == alone["error"].isna().tolist() == [True, False] + [True] * 11
    assert "truncated" in on_spark["error"][1]
    answered = on_spark["error"].isna()
    assert (on_spark.loc[answered, "pred_eyes"] - alone.loc[answered, "pred_eyes"].astype(float)).abs().max() <= 1e-5


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_spark_local2_answers_50_photos_and_a_broken_file_like_the_one_machine_path(mlflow_store, tmp_path):
    require(have_spark(), "pyspark or Java is missing (pip install -e '.[spark]'; apt-get install "
                          "openjdk-17-jre-headless)")
    data = shared_data("utkface-gender")
    labels = pd.read_csv(data / "labels.csv").head(50)
    labels["path"] = [str(data / p) for p in labels["path"]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(open(labels["path"][0], "rb").read()[:300])
    manifest = pd.concat([labels, pd.DataFrame({"path": [str(broken)], "gender": ["female"], "age": [30]})])
    manifest.to_csv(tmp_path / "photos.csv", index=False)
    uri = logged_eyes_model()

    outcome = spark.predict(str(tmp_path / "photos.csv"), uri, str(tmp_path / "out.parquet"), kind="photo",
                            master="local[2]", batch_size=8)
    assert (outcome.rows, outcome.master) == (51, "local[2]")
    assert 1 <= outcome.loads <= 2        # 8 tasks (4 per core) on 2 reused Python workers: a load each at most
    on_spark = pd.read_parquet(tmp_path / "out.parquet").sort_values("path").reset_index(drop=True)
    alone, _ = batch.score(batch.local_model(uri), batch.list_inputs(tmp_path / "photos.csv", "photo"),
                           progress=False)
    alone = alone.sort_values("path").reset_index(drop=True)

    assert list(on_spark.columns) == ["path", "gender", "age", "race", "kind", "pred_eyes", "pred_faces", "error"]
    pd.testing.assert_frame_equal(on_spark[["path", "gender", "age"]], alone[["path", "gender", "age"]],
                                  check_dtype=False)
    assert on_spark["error"].isna().tolist() == alone["error"].isna().tolist()
    assert "unreadable image" in on_spark.loc[on_spark["path"] == str(broken), "error"].item()
    assert outcome.scored == alone["error"].isna().sum() >= 45
    answered = on_spark["error"].isna()
    diff = (on_spark.loc[answered, "pred_eyes"] - alone.loc[answered, "pred_eyes"].astype(float)).abs().max()
    assert diff <= 1e-4
    assert on_spark.loc[answered, "pred_faces"].tolist() == alone.loc[answered, "pred_faces"].astype(float).tolist()
