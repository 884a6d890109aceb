"""The command line: clear errors before any compute, and `mlflow run` end to end."""

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from helpers import subprocess_env
from PIL import Image

from faceattr.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_unknown_experiment_is_a_clear_error(capsys):
    assert main(["train", "nose"]) == 2
    assert "unknown experiment 'nose'" in capsys.readouterr().err


def test_bad_parameter_is_a_clear_error(capsys):
    assert main(["train", "eyes", "--epochs", "many"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["train", "eyes", "--model.widht", "3"]) == 2
    assert "model.widht" in capsys.readouterr().err


def test_bad_manifest_lists_every_bad_row_and_trains_nothing(tmp_path, mlflow_store, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("good1", "good2", "corrupt", "high", "nan"):
        Image.new("RGB", (60, 32), (120, 90, 60)).save(images / f"{name}.jpg")
    data = (images / "corrupt.jpg").read_bytes()
    (images / "corrupt.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "labels.csv").write_text(
        "path,eyes,gender\n"
        "images/good1.jpg,1.0,male\n"
        "images/missing.jpg,0.5,female\n"
        "images/corrupt.jpg,0.0,male\n"
        "images/high.jpg,1.7,female\n"
        "images/nan.jpg,,male\n"
        "images/good2.jpg,0.0,female\n")
    code = main(["train", "eyes", "--data", str(tmp_path / "labels.csv"), "--data.image_region", "eyes"])
    err = capsys.readouterr().err
    assert code == 2
    for row, name in ((3, "missing.jpg"), (4, "corrupt.jpg"), (5, "high.jpg"), (6, "nan.jpg")):
        assert f"row {row} images/{name}" in err
    assert "good1" not in err and "good2" not in err
    assert mlflow.search_runs(search_all_experiments=True).empty   # nothing was trained or logged


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mlflow_run_entry_point_trains_and_logs_into_the_named_experiment(tmp_path, synthetic_cache):
    env = subprocess_env(tmp_path)
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "eyes", "--env-manager", "local",
           "--experiment-name", "eyes", "-P", "epochs=2", "-P", "data.size=100", "-P", "train.verbose=0"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        runs = mlflow.search_runs(experiment_names=["eyes"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["params.epochs"] == "2" and run["params.train.epochs"] == "2"   # -P value and resolved config
    assert run["params.data.size"] == "100"
    assert run["tags.collapsed"] in ("true", "false")
    # the seeds' figure: the per-gender-mean baseline's MSE over the model's, both on validation
    assert run["metrics.val_mse"] > 0
    assert run["metrics.baseline_ratio"] == pytest.approx(run["metrics.baseline_mse"] / run["metrics.val_mse"])
