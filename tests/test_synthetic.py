"""The synthetic face generator: determinism, label distributions, boxes, cache, labels driving pixels."""

import csv
import os

import numpy as np
import pytest

from faceattr.data import synthetic
from faceattr.errors import ConfigError


def read_rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def box(text):
    x0, y0, x1, y1 = (float(v) for v in text.split())
    assert x1 > x0 and y1 > y0
    return x0, y0, x1, y1


@pytest.fixture(scope="module")
def rows400(tmp_path_factory):
    """One 400-photo set (~2 s) shared by the distribution tests."""
    return read_rows(synthetic.generate(tmp_path_factory.mktemp("syn400"), size=400, seed=3))


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = synthetic.generate(tmp_path / "a", size=40, seed=7)
    b = synthetic.generate(tmp_path / "b", size=40, seed=7)
    c = synthetic.generate(tmp_path / "c", size=40, seed=8)
    assert a == tmp_path / "a" / "labels.csv"
    assert a.read_bytes() == b.read_bytes()
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert names == [f"{i:05d}.png" for i in range(40)]
    for name in names:
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert (tmp_path / "a/images/00000.png").read_bytes() != (tmp_path / "c/images/00000.png").read_bytes()


def test_columns_paths_and_persons(tmp_path):
    csv_path = synthetic.generate(tmp_path, size=40, seed=1)
    rows = read_rows(csv_path)
    assert list(rows[0]) == ["path", "background", "eyes", "mouth", "gender", "person", *synthetic.BOX_COLUMNS,
                             "background_true", "eyes_true", "mouth_true"]
    assert all((tmp_path / r["path"]).is_file() for r in rows)
    genders = {}
    for r in rows:
        assert r["person"].startswith("p") and len(r["person"]) == 5
        assert genders.setdefault(r["person"], r["gender"]) == r["gender"]  # a person keeps one gender
    assert len(genders) == 20  # size // 2: two photos a person
    assert sorted(genders.values()) == ["female"] * 10 + ["male"] * 10


def test_half_male_half_female_and_labels_rounded(rows400):
    assert sum(r["gender"] == "male" for r in rows400) == 200
    assert {r["gender"] for r in rows400} == {"male", "female"}
    for r in rows400:
        for k in ("background", "eyes", "mouth"):
            assert float(r[k]) in (0.0, 0.5, 1.0)
            true = float(r[f"{k}_true"])
            assert 0 <= true <= 1   # closeness to the truth: see the labeller test below


def test_continuous_labels_when_not_rounded(tmp_path):
    rows = read_rows(synthetic.generate(tmp_path, size=40, seed=1, rounded=False))
    values = [float(r[k]) for r in rows for k in ("background", "eyes", "mouth")]
    assert all(0 <= v <= 1 for v in values)
    assert sum(v not in (0.0, 0.5, 1.0) for v in values) > 100
    assert all(r[k] == r[f"{k}_true"] for r in rows for k in ("background", "eyes", "mouth"))


def test_label_distributions_like_the_seeds(rows400):
    def mean(key, gender=None):
        return np.mean([float(r[key]) for r in rows400 if gender in (None, r["gender"])])

    assert mean("mouth", "female") > mean("mouth", "male") + 0.08  # seeds: M 0.44, F 0.62
    assert mean("eyes") > 0.8  # mostly open
    assert 0.35 < mean("background") < 0.65
    assert len({r["background"] for r in rows400}) == 3  # spread over 0, 0.5 and 1


def test_boxes_parse_with_the_crop_shapes(rows400):
    for r in rows400:
        fx0, fy0, fx1, fy1 = box(r["face_box"])
        ex0, ey0, ex1, ey1 = box(r["eyes_box"])
        mx0, my0, mx1, my1 = box(r["mouth_box"])
        assert (ex1 - ex0) / (ey1 - ey0) == pytest.approx(60 / 32, rel=0.02)
        assert mx1 - mx0 == pytest.approx(my1 - my0, abs=0.15)
        assert fx1 - fx0 == pytest.approx(fy1 - fy0, abs=0.15)
        assert fy0 < (ey0 + ey1) / 2 < (my0 + my1) / 2 < fy1  # eyes above mouth, both inside the face
        assert fx0 < (ex0 + ex1) / 2 < fx1 and fx0 < (mx0 + mx1) / 2 < fx1


def test_bad_sizes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="even"):
        synthetic.generate(tmp_path, size=41)
    with pytest.raises(ConfigError, match="n_persons"):
        synthetic.generate(tmp_path, size=40, n_persons=1)


def draw(seed, **labels):
    """Photo of a fixed person and pose; labels default to mid values."""
    rng = np.random.default_rng(seed)
    person, pose = synthetic._sample_person(rng, male=seed % 2 == 0), synthetic._sample_pose(rng)
    img, boxes = synthetic.draw_photo(person, pose, {"background": 0.5, "eyes": 0.5, "mouth": 0.5, **labels})
    return np.asarray(img, float), boxes


def inside(boxes, key, shape=(120, 120)):
    x0, y0, x1, y1 = boxes[key]
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return (xs + 0.5 >= x0) & (xs + 0.5 <= x1) & (ys + 0.5 >= y0) & (ys + 0.5 <= y1)


@pytest.mark.parametrize("seed", range(6))
def test_eye_openness_changes_only_pixels_in_the_eyes_box(seed):
    closed, boxes = draw(seed, eyes=0.0)
    opened, boxes_open = draw(seed, eyes=1.0)
    assert boxes == boxes_open  # boxes depend on geometry, not on openness
    diff = np.abs(opened - closed).max(axis=2)
    band = inside(boxes, "eyes_box")
    assert diff[band].mean() > 3  # low: dark glasses hide much of the change
    assert diff[~band].max() < 6  # only LANCZOS ringing leaks past the box


@pytest.mark.parametrize("seed", range(4))
def test_mouth_openness_changes_the_mouth_box_most(seed):
    closed, boxes = draw(seed, mouth=0.0)
    opened, _ = draw(seed, mouth=1.0)
    diff = np.abs(opened - closed).max(axis=2)
    mouth = inside(boxes, "mouth_box")
    assert diff[mouth].mean() > 5 * max(diff[~mouth].mean(), 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_background_label_changes_the_corners(seed):
    dark, _ = draw(seed, background=0.0)
    bright, _ = draw(seed, background=1.0)
    corners = [bright[:10, :10] - dark[:10, :10], bright[:10, -10:] - dark[:10, -10:]]
    assert min(c.mean() for c in corners) > 80  # light factor >= 0.65 of a ~227 grey step


def test_default_dataset_generates_once_then_reuses(tmp_path, monkeypatch):
    calls = []
    real = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setenv("FACEATTR_CACHE", str(tmp_path))
    first = synthetic.default_dataset(size=20, seed=2)
    name = f"synthetic-v{synthetic.GENERATOR_VERSION}-seed2-n20-rounded"
    assert first == tmp_path / name / "labels.csv" and first.is_file()
    assert os.listdir(tmp_path) == [name]  # the temporary sibling was renamed away
    assert synthetic.default_dataset(size=20, seed=2) == first
    assert len(calls) == 1
    other = synthetic.default_dataset(size=20, seed=2, rounded=False, cache_dir=tmp_path / "c")
    assert other.parent.name.endswith("-continuous") and other.parent.parent == tmp_path / "c"


def test_default_dataset_losing_a_race_uses_the_winners(tmp_path, monkeypatch):
    real = synthetic.generate
    winner = tmp_path / f"synthetic-v{synthetic.GENERATOR_VERSION}-seed0-n20-rounded"

    def generate_while_another_process_finishes(out_dir, **kwargs):
        real(winner, **kwargs)  # the other process renames its copy into place first
        return real(out_dir, **kwargs)

    monkeypatch.setattr(synthetic, "generate", generate_while_another_process_finishes)
    (winner / "marker").parent.mkdir()
    (winner / "marker").write_text("winner")
    csv_path = synthetic.default_dataset(size=20, cache_dir=tmp_path)
    assert csv_path == winner / "labels.csv" and (winner / "marker").is_file()
    assert os.listdir(tmp_path) == [winner.name]  # the loser's temporary copy is gone


def test_rounded_labels_follow_the_truth_with_labeller_disagreement_near_boundaries(rows400):
    truth = np.array([float(r["mouth_true"]) for r in rows400])
    label = np.array([float(r["mouth"]) for r in rows400])
    nearest = np.floor(truth * 2 + 0.5) / 2
    agree = np.mean(label == nearest)
    assert 0.7 < agree < 0.98            # mostly the nearest value, but labellers do misjudge
    assert np.all(np.abs(label - truth) <= 0.75)
