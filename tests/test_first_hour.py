"""A new user's first hour (issue 30): a typo refused at once, Ctrl-C a sentence and a KILLED run, photos
too large refused from their header, unreadable photos named for what they are.

Each test says which one-line break it was seen to fail on."""

from __future__ import annotations

import io
import re

import mlflow
import numpy as np
import pytest
from PIL import Image

from faceattr import cli, train
from faceattr.data import regions
from faceattr.errors import DataError


@pytest.mark.parametrize("argv", [["train", "eyes", "--epoch", "1"], ["tune", "eyes", "--model.widht", "3"],
                                  ["promote", "nose"], ["train", "nose"]])
def test_a_typo_is_refused_before_tensorflow_is_imported(argv, monkeypatch, capsys):
    """Seen to fail with `import_tensorflow()` back before the commands (main called it for every command)."""
    def too_early():
        raise AssertionError("TensorFlow imported before the command line and the config were checked")

    monkeypatch.setattr(cli, "import_tensorflow", too_early)
    assert cli.main(argv) == 2
    assert "faceattr: error:" in capsys.readouterr().err


def test_the_command_line_starts_without_the_heavy_libraries():
    """`faceattr` reads its command line and config with none of TensorFlow, MLflow or scikit-learn imported
    (together ~5 s before a typo could be refused). Seen to fail with evaluate.py importing
    `sklearn.metrics` at the top again (the config's import of the tasks pulled it in: 0.6 s per command)."""
    import subprocess
    import sys

    code = "import sys, faceattr.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', " \
           "'mlflow', 'sklearn'}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_ctrl_c_during_training_says_interrupted_and_marks_the_run_killed(mlflow_store, synthetic_cache, monkeypatch,
                                                                           capsys):
    """Seen to fail without start_run's KeyboardInterrupt branch (the run ended FAILED) and without main's
    (a traceback, no exit code 130)."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "to_tf_dataset", interrupted)
    code = cli.main(["train", "eyes", "--epochs", "1", "--data.size", "20", "--train.verbose", "0"])
    err = capsys.readouterr().err
    assert code == 130 and "faceattr: interrupted" in err and "Traceback" not in err
    runs = mlflow.search_runs(experiment_names=["eyes"])
    assert list(runs["status"]) == ["KILLED"]
    assert runs["params.train.epochs"].item() == "1"    # what it logged before the interruption is kept


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_photo_over_the_pixel_limit_is_refused_from_its_header(monkeypatch):
    """4,000 x 3,000 against a 10-megapixel limit: refused before `load` decodes it. Seen to fail with the
    check after `image.load()` (the decode was called) and with the check removed (decoded whole)."""
    photo = _png(4000, 3000)
    monkeypatch.setattr(regions, "MAX_MEGAPIXELS", 10.0)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(DataError, match=r"4000 x 3000 pixels \(12 megapixels\), over the limit of 10 megapixels"):
        regions.load_rgb(photo)
    assert decoded == []


def test_the_served_model_answers_a_too_large_photo_with_an_error_row(monkeypatch):
    """Seen to fail when serving's _decode called every DataError "not a JPEG/PNG photo"."""
    from faceattr.serving.model import FaceattrModel

    monkeypatch.setattr(regions, "MAX_MEGAPIXELS", 0.01)
    with pytest.raises(DataError) as info:
        FaceattrModel._decode(_png(200, 200))
    assert "over the limit" in str(info.value) and "not a JPEG/PNG" not in str(info.value)


@pytest.mark.parametrize("data, reason", [
    (b"", "an empty file"),
    (b"hello, not a picture", "not an image file"),
    ("truncated", "a truncated file"),
])
def test_an_unreadable_photo_is_named_for_what_it_is(data, reason):
    """No `<_io.BytesIO object at 0x...>` in the reason. Seen to fail with _reason returning PIL's message."""
    if data == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buffer, format="JPEG")
        data = buffer.getvalue()[:300]
    with pytest.raises(DataError) as info:
        regions.load_rgb(data)
    assert reason in str(info.value) and "0x" not in str(info.value)


def test_switches_show_that_they_stand_alone(capsys):
    """`--dry-run`, `--rollback` and `--fresh` are switches (MLproject passes them a true/false): their
    help must not read as if they took a value. Seen to fail without their metavar ([DRY_RUN])."""
    shown = ""
    for argv in (["promote", "--help"], ["tune", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        shown += " ".join(capsys.readouterr().out.split())
    assert "--dry-run [true|false]" in shown and "--rollback [true|false]" in shown and "--fresh [true|false]" in shown
    assert not re.search(r"\[(DRY_RUN|ROLLBACK|FRESH)\]", shown)
