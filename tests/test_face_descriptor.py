"""dlib's face descriptor: quality on real faces (ORL), the content cache, failures, missing packages."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr.errors import ConfigError, DataError, FaceattrError
from faceattr.features import face_descriptor as fd
from helpers import REPO, require_face_features, shared_data


@pytest.fixture
def dlib_weights():
    """dlib's models: without them a test that runs dlib skips on a developer's machine and fails under CI."""
    require_face_features()


# the tests that run dlib; the others (cache key, failures, missing packages) run without it
needs_dlib = pytest.mark.usefixtures("dlib_weights")

SAME_PERSON = 0.6   # dlib's threshold: same person below it


def orl_photos(persons, per_person) -> tuple[list[str], np.ndarray]:
    root = shared_data("orl-faces")
    df = pd.read_csv(root / "labels.csv")
    df = df[df.person.isin(persons)].groupby("person").head(per_person)
    return [str(root / p) for p in df.path], df.person.astype(str).to_numpy()


@pytest.fixture
def counted(monkeypatch):
    """Counts faces sent through dlib's network (describe is its only caller)."""
    calls = []
    real = fd.describe

    def spy(image, box=None, settings=fd.ALIGNMENT):
        calls.append(box)
        return real(image, box, settings)

    monkeypatch.setattr(fd, "describe", spy)
    return calls


def noise_and_blank(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(folder / "noise.png")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "blank.png")
    return [str(folder / "noise.png"), str(folder / "blank.png")]


@needs_dlib
def test_photos_of_one_person_are_closer_than_photos_of_two(tmp_path):
    """10 ORL persons x 4 photos. Measured on all 400 ORL photos: no same-person pair above 0.6 (given
    the whole crop as landmark box instead of dlib's detector box, 12% of them were)."""
    paths, person = orl_photos([f"s{i}" for i in range(1, 11)], 4)
    x, failures = fd.describe_files(paths, cache_dir=tmp_path)
    assert failures == [] and x.shape == (len(paths), 128) and x.dtype == np.float32
    distance = np.linalg.norm(x[:, None] - x[None], axis=-1)
    same = (person[:, None] == person[None]) & ~np.eye(len(paths), dtype=bool)
    assert distance[same].mean() < SAME_PERSON < distance[person[:, None] != person[None]].mean()
    assert distance[same].max() < SAME_PERSON
    nearest = np.where(np.eye(len(paths), dtype=bool), np.inf, distance).argmin(axis=1)
    assert (person[nearest] == person).all()   # every photo's nearest other photo shows the same person


@needs_dlib
def test_a_face_box_in_a_larger_photo_gives_the_crop_s_descriptor():
    """The box is in the photo's full-resolution pixels: the face pasted into a 3x larger canvas, its box
    given, must give what the face crop alone gives."""
    paths, _ = orl_photos(("s5",), 1)
    face = Image.open(paths[0]).convert("RGB")
    canvas = Image.new("RGB", (3 * face.width, 3 * face.height), (90, 90, 90))
    canvas.paste(face, (face.width, 2 * face.height))
    box = (face.width, 2 * face.height, 2 * face.width, 3 * face.height)
    alone = fd.describe(np.asarray(face))
    big = canvas.resize((2 * canvas.width, 2 * canvas.height), Image.Resampling.BILINEAR)  # a higher-resolution photo
    in_photo = fd.describe(np.asarray(big), [2 * v for v in box])
    assert np.linalg.norm(alone - in_photo) < 0.15   # same face, resampled: far below 0.6


@needs_dlib
def test_a_second_call_is_served_from_the_cache(tmp_path, counted):
    paths, _ = orl_photos(("s6",), 3)
    first, _ = fd.describe_files(paths, cache_dir=tmp_path, workers=1)
    assert len(counted) == 3
    second, failures = fd.describe_files(paths, cache_dir=tmp_path, workers=1)
    assert len(counted) == 3 and failures == []
    np.testing.assert_array_equal(first, second)
    assert len(list(tmp_path.rglob("*.npy"))) == 3 and not list(tmp_path.rglob("*.tmp"))


@needs_dlib
def test_the_cache_key_is_the_content_the_box_and_the_settings(tmp_path, counted):
    paths, _ = orl_photos(("s7",), 1)
    copy = tmp_path / "renamed.png"
    copy.write_bytes(Path(paths[0]).read_bytes())
    fd.describe_files(paths, cache_dir=tmp_path / "c", workers=1)
    fd.describe_files([copy], cache_dir=tmp_path / "c", workers=1)          # same bytes, other name: cached
    assert len(counted) == 1
    fd.describe_files(paths, ["0 0 92 100"], cache_dir=tmp_path / "c", workers=1)  # a manifest box: computed
    fd.describe_files(paths, cache_dir=tmp_path / "c", settings=fd.Alignment(padding=0.3), workers=1)
    assert len(counted) == 3
    Image.open(paths[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(copy)  # other bytes, same name
    fd.describe_files([copy], cache_dir=tmp_path / "c", workers=1)
    assert len(counted) == 4


def test_alignment_settings_have_a_stable_key_and_are_checked():
    assert fd.ALIGNMENT.key == "dlib-resnet1-hog-0.5-c150-p0.25-j1"
    assert fd.Alignment(num_jitters=3).key != fd.ALIGNMENT.key
    with pytest.raises(ConfigError, match="150x150"):
        fd.Alignment(chip_size=100)


@needs_dlib
def test_no_face_is_a_failure_naming_the_file_and_its_verdict_is_cached(tmp_path, counted):
    paths = noise_and_blank(tmp_path)
    x, failures = fd.describe_files(paths, cache_dir=tmp_path / "c", workers=1)
    assert [(f["path"], f["reason"]) for f in failures] == [(p, "no face") for p in paths]
    assert np.isnan(x).all()
    fd.describe_files(paths, cache_dir=tmp_path / "c", workers=1)
    assert len(counted) == 2   # the second time from the cache
    with pytest.raises(DataError, match="no face"):
        fd.describe(np.asarray(Image.open(paths[0])))


def test_unreadable_files_are_failures_and_bad_boxes_stop_before_any_work(tmp_path, counted):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    _, failures = fd.describe_files([broken, tmp_path / "missing.png"], cache_dir=tmp_path / "c", workers=1)
    assert [(f["path"], f["reason"]) for f in failures] == [(str(broken), "unreadable"),
                                                            (str(tmp_path / "missing.png"), "unreadable")]
    with pytest.raises(DataError, match="broken.jpg"):
        fd.describe_files([broken], ["10 10 5 20"], cache_dir=tmp_path / "c", workers=1)
    assert counted == []


@pytest.mark.parametrize("missing", ["dlib", "face_recognition_models"])
def test_missing_dlib_names_the_packages_to_install(monkeypatch, missing):
    monkeypatch.setattr(fd, "_models", None)
    monkeypatch.setitem(sys.modules, missing, None)   # `import` then raises ImportError
    with pytest.raises(FaceattrError, match="pip install dlib-bin face_recognition_models"):
        fd.models()


CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from faceattr.features import face_descriptor as fd

    real_replace = os.replace
    def slow_replace(src, dst):   # a slow disk: the two processes' writes of one photo overlap
        time.sleep(0.2)
        real_replace(src, dst)
    os.replace = slow_replace
    fd.models()
    go = sys.argv[1]
    while not os.path.exists(go):   # start together
        time.sleep(0.01)
    x, failures = fd.describe_files(sys.argv[4:], cache_dir=sys.argv[2], workers=1)
    assert failures == [], failures
    np.save(sys.argv[3], x)
""")


@needs_dlib
def test_two_processes_filling_one_cache_both_succeed_and_agree(tmp_path):
    paths, _ = orl_photos(("s8",), 4)
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), str(tmp_path / "cache"),
                                  str(tmp_path / f"x{i}.npy"), *paths], env=env, stderr=subprocess.PIPE, text=True)
                for i in range(2)]
    go.touch()
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0, 0], errors
    np.testing.assert_array_equal(np.load(tmp_path / "x0.npy"), np.load(tmp_path / "x1.npy"))
    cached, _ = fd.describe_files(paths, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(cached, np.load(tmp_path / "x0.npy"))
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4 and not list((tmp_path / "cache").rglob("*.tmp"))


@needs_dlib
def test_workers_fill_the_cache_in_other_processes_with_the_same_descriptors(tmp_path, counted):
    paths, _ = orl_photos(("s5",), 4)
    paths = [*paths, *noise_and_blank(tmp_path)]
    alone, alone_failures = fd.describe_files(paths, cache_dir=tmp_path / "one", workers=1)
    described = len(counted)
    pooled, pooled_failures = fd.describe_files(paths, cache_dir=tmp_path / "two", workers=2)
    assert len(counted) == described          # no face went through this process: the workers described them
    np.testing.assert_array_equal(pooled, alone)
    assert pooled_failures == alone_failures and [f["path"] for f in pooled_failures] == paths[4:]
    assert len(list((tmp_path / "two").rglob("*.npy"))) == 4 and len(list((tmp_path / "two").rglob("*.json"))) == 2


def test_cosine_baseline_scores_the_target_above_others():
    target = np.array([[1.0, 0.0, 0.0], [0.8, 0.2, 0.0]])   # mean (0.9, 0.1, 0)
    scores = fd.cosine_baseline_scores(target, [[2.0, 0.2, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_allclose(scores, [0.99994, 0.11043, -0.99388], atol=1e-5)
    with pytest.raises(DataError):
        fd.cosine_baseline_scores(np.zeros((0, 3)), target)


@needs_dlib
def test_mtcnn_finds_the_face_when_the_manifest_has_no_box(tmp_path):
    """find_faces=True: the face in a larger photo is found by MTCNN, as `faceattr prepare` finds it."""
    paths, _ = orl_photos(("s9",), 1)
    face = Image.open(paths[0]).convert("RGB")
    canvas = Image.new("RGB", (4 * face.width, 3 * face.height), (200, 200, 200))
    canvas.paste(face, (2 * face.width, face.height))
    canvas.save(tmp_path / "photo.png")
    noise = noise_and_blank(tmp_path)[0]
    x, failures = fd.describe_files([tmp_path / "photo.png", noise], find_faces=True, cache_dir=tmp_path / "c")
    assert [(f["path"], f["reason"]) for f in failures] == [(noise, "no face")]
    assert "confidence" in failures[0]["detail"]   # MTCNN's verdict (dlib was never asked)
    assert np.linalg.norm(x[0] - fd.describe(np.asarray(face))) < 0.15
