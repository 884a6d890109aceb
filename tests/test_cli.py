"""The command line: clear errors before any compute, and `mlflow run` end to end."""

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
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


@pytest.mark.parametrize("argv, named", [
    (["train", "eyes", "--epoch", "1"], "unknown parameter 'epoch'"),   # argparse took it as --epochs 1
    (["train", "eyes", "--epochs", "40", "--epoch", "1"], "unknown parameter 'epoch'"),   # mlflow run -P epoch=1
    (["train", "eyes", "--batch", "8"], "unknown parameter 'batch'"),
    (["report", "eyes", "--ou", "x.html"], "--ou"),
    (["promote", "eyes", "--dry", "true"], "--dry"),
])
def test_unknown_or_abbreviated_option_is_an_error_naming_it(argv, named, mlflow_store, capsys):
    assert main(argv) == 2
    assert named in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True).empty   # refused before anything ran


def test_train_help_tells_of_the_config_overrides(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    assert "--section.key VALUE" in " ".join(capsys.readouterr().out.split())


def test_a_command_prints_its_own_output_not_the_libraries_chatter(tmp_path):
    """TensorFlow's import lines, absl's notice and MLflow's notices are gone; a real error still shows."""
    done = subprocess.run([sys.executable, "-m", "faceattr", "report", "nose"], cwd=tmp_path, capture_output=True,
                          text=True, env={k: v for k, v in subprocess_env(tmp_path).items() if k != "TF_CPP_MIN_LOG_LEVEL"},
                          timeout=240)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).splitlines()
    assert lines and all(line.startswith("faceattr: ") for line in lines), lines
    assert "no MLflow experiment named 'nose'" in done.stderr


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


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_small_folder_logs_what_it_used_and_is_not_registered_unless_asked(tmp_path, mlflow_store, capsys):
    """29 ready crops: the run logs the 29 rows it read and no synthetic `data.size`; the model is not
    registered under the shared name unless --register-few-photos asks for it."""
    images = tmp_path / "images"
    images.mkdir()
    rows = ["path,eyes,gender"]
    rng = np.random.default_rng(0)   # distinct photos: near-duplicates would share a split
    for i in range(29):
        Image.fromarray(rng.integers(0, 255, (32, 60, 3), dtype=np.uint8)).save(images / f"{i}.png")
        rows.append(f"images/{i}.png,{i % 2},{('male', 'female')[i % 3 % 2]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    argv = ["train", "eyes", "--data", str(tmp_path / "labels.csv"), "--data.image_region", "eyes", "--epochs", "1",
            "--train.verbose", "0", "--evaluation.gallery", "0"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "not registered as 'eyes': trained on 29 photos, fewer than data.min_photos=100" in err
    (run,) = mlflow.search_runs(experiment_names=["eyes"], output_format="list")
    params = run.data.params
    assert params["data.rows"] == "29" and params["data.source"] == str(tmp_path / "labels.csv")
    assert not {"data.size", "data.seed", "data.rounded", "data.persons"} & set(params)
    assert not mlflow.MlflowClient().search_registered_models()
    assert main([*argv, "--register-few-photos"]) == 0
    assert "registered=1" in capsys.readouterr().out



def test_the_command_ends_at_once_after_its_output_exit_handlers_and_threads(tmp_path):
    """`faceattr` (cli.run) skips the interpreter's teardown, not what a user can see: piped stdout arrives
    whole, exit handlers run (MLflow ends its runs in one), a thread still working is waited for, and the
    exit status is the command's. Fails without run's flush, without `_run_exitfuncs`, without the thread
    check, or with `os._exit(0)`."""
    script = tmp_path / "command.py"
    script.write_text(
        "import atexit, os, pathlib, sys, threading\n"
        "from faceattr import cli\n"
        f"out = pathlib.Path({str(tmp_path)!r})\n"
        "atexit.register(lambda: (out / 'handler').write_text('ran'))\n"
        "if os.environ.get('THREAD'):\n"
        "    finished = threading.Event()\n"
        "    def work():   # still working when the command is done\n"
        "        finished.wait()\n"
        "        for _ in range(3_000_000): pass\n"
        "        (out / 'thread').write_text('done')\n"
        "    threading.Thread(target=work).start()\n"
        "    command = cli.main\n"
        "    cli.main = lambda: (command(), finished.set())[0]\n"
        "sys.argv = ['faceattr', *sys.argv[1:]]\n"
        "cli.run()\n")

    def command(*argv, **env):
        return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=120,
                              env={**subprocess_env(tmp_path, **env), "PYTHONUNBUFFERED": ""})

    listed = command("experiments")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == len(list((REPO / "experiments").glob("*.yaml")))
    assert (tmp_path / "handler").read_text() == "ran"
    refused = command("train", "nose")
    assert refused.returncode == 2 and "unknown experiment 'nose'" in refused.stderr
    assert command("experiments", THREAD="1").returncode == 0
    assert (tmp_path / "thread").read_text() == "done"
