"""Data-set manifests and validation (faceattr.data.manifest)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import shared_data

from faceattr.data.manifest import load_dataset, read_folders, read_manifest, validate
from faceattr.errors import DataError


def _image(path: Path, size=(16, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def _csv(folder: Path, text: str) -> Path:
    path = folder / "labels.csv"
    path.write_text(text)
    return path


def test_reads_and_resolves_paths(tmp_path):
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "b.jpg", size=(300, 200), mode="L")
    csv = _csv(tmp_path, "path,eyes,gender,person\nimages/a.png,1,M,p1\nimages/b.jpg,0.25,,p2\n")
    df = load_dataset(csv, targets=("eyes",), region="eyes", image_region="eyes")
    assert df["path"].tolist() == [str(tmp_path / "images" / "a.png"), str(tmp_path / "images" / "b.jpg")]
    assert df["eyes"].tolist() == [1.0, 0.25] and df["eyes"].dtype == float
    assert df["gender"].tolist() == ["male", None]
    assert df["person"].tolist() == ["p1", "p2"]
    assert df["image_region"].tolist() == ["eyes", "eyes"]
    assert df["row"].tolist() == [2, 3]


def test_image_region_defaults_to_column_then_photo(tmp_path):
    csv = _csv(tmp_path, "path,image_region\na.png,Face\nb.png,\n")
    assert read_manifest(csv)["image_region"].tolist() == ["face", "photo"]
    assert read_manifest(csv, image_region="mouth")["image_region"].tolist() == ["mouth", "mouth"]
    csv = _csv(tmp_path, "path\na.png\n")
    assert read_manifest(csv)["image_region"].tolist() == ["photo"]


def test_every_bad_row_in_one_error(tmp_path):
    """THE key test: nothing trains, and the user sees every problem at once."""
    _image(tmp_path / "images" / "ok.png")
    corrupt = tmp_path / "images" / "c.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(corrupt, quality=95)
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])
    _image(tmp_path / "images" / "d.png")
    _image(tmp_path / "images" / "e.png")
    csv = _csv(
        tmp_path,
        "path,eyes\nimages/ok.png,1\nimages/missing.png,0\nimages/c.jpg,1\nimages/d.png,1.7\nimages/e.png,nan\n",
    )
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, targets=("eyes",), region="eyes", image_region="eyes")
    message = str(info.value)
    assert "4 bad rows, nothing was trained" in message
    lines = message.splitlines()[1:]
    assert len(lines) == 5   # the target's bad labels under their column, then the other bad rows
    assert lines[0] == "  column `eyes`: 2 of 5 rows hold no number in 0..1:"
    assert "row 5 images/d.png: eyes=1.7 is outside 0..1" in lines[1]
    assert "row 6 images/e.png: eyes is NaN" in lines[2]
    assert "row 3 images/missing.png: file not found" in lines[3]
    assert "row 4 images/c.jpg: unreadable image" in lines[4]


def test_not_a_number_and_empty_label(tmp_path):
    _image(tmp_path / "a.png")
    csv = _csv(tmp_path, "path,mouth\na.png,open\na.png,\n")
    with pytest.raises(DataError) as info:
        load_dataset(csv, targets=("mouth",), region="mouth", image_region="mouth")
    assert "row 2 a.png: mouth='open' is not a number" in str(info.value)
    assert "row 3 a.png: mouth is empty" in str(info.value)


def test_missing_label_column_named(tmp_path):
    csv = _csv(tmp_path, "path,eyes\na.png,1\n")
    with pytest.raises(DataError, match=r"'mouth'.*columns are: path, eyes"):
        load_dataset(csv, targets=("mouth",), region="mouth")


def test_unknown_gender_named(tmp_path):
    _image(tmp_path / "a.png")
    csv = _csv(tmp_path, "path,gender\na.png,Female\na.png,x\na.png,f\n")
    with pytest.raises(DataError, match=r"row 3 a.png: gender='x'") as info:
        load_dataset(csv, targets=("gender",), region="face", image_region="face")
    assert "1 bad row," in str(info.value)


def test_gender_map(tmp_path):
    _image(tmp_path / "a.png")
    csv = _csv(tmp_path, "path,gender\na.png,0\na.png,1\n")
    df = load_dataset(csv, targets=("gender",), region="face", image_region="face", gender_map={0: "male", 1: "female"})
    assert df["gender"].tolist() == ["male", "female"]


def test_photo_rows_need_a_box_for_the_region(tmp_path):
    _image(tmp_path / "a.png", size=(100, 100))
    csv = _csv(tmp_path, "path,eyes,eyes_box\na.png,1,10 10 50 30\na.png,0,\na.png,0,1 2 x 4\n")
    with pytest.raises(DataError) as info:
        load_dataset(csv, targets=("eyes",), region="eyes")
    message = str(info.value)
    assert "2 bad rows" in message
    assert "row 3 a.png: eyes_box is empty" in message and "row 4 a.png: eyes_box" in message
    # the whole photo needs no box; no box column at all is named once
    assert len(load_dataset(csv, targets=(), region="photo")) == 3
    with pytest.raises(DataError, match="'mouth_box' column"):
        load_dataset(csv, targets=(), region="mouth")


def test_crop_of_the_wrong_region_is_reported(tmp_path):
    _image(tmp_path / "a.png")
    csv = _csv(tmp_path, "path,eyes\na.png,1\n")
    with pytest.raises(DataError, match="image is a mouth crop but the model needs eyes"):
        load_dataset(csv, targets=("eyes",), region="eyes", image_region="mouth")


def test_folder_layout_loads_with_labels(tmp_path):
    _image(tmp_path / "open" / "b.PNG", size=(40, 20), mode="RGBA")
    _image(tmp_path / "open" / "a.jpg", mode="L")
    _image(tmp_path / "closed" / "c.webp")
    (tmp_path / "open" / "notes.txt").write_text("not an image")
    folders = {"open": {"eyes": 1.0}, "closed": {"eyes": 0.0}}
    df = load_dataset(tmp_path, targets=("eyes",), region="eyes", image_region="eyes", folders=folders)
    assert [Path(p).name for p in df["path"]] == ["a.jpg", "b.PNG", "c.webp"]
    assert df["eyes"].tolist() == [1.0, 1.0, 0.0]
    assert set(df["image_region"]) == {"eyes"}


def test_missing_folder_named(tmp_path):
    _image(tmp_path / "open" / "a.png")
    with pytest.raises(DataError, match="not found: closed"):
        read_folders(tmp_path, {"open": {"eyes": 1.0}, "closed": {"eyes": 0.0}})
    with pytest.raises(DataError, match="nope not found"):
        read_folders(tmp_path / "nope", {"open": {"eyes": 1.0}})


def test_bad_image_region_named_once(tmp_path):
    csv = _csv(tmp_path, "path,eyes\na.png,1\n")
    with pytest.raises(DataError, match="image_region 'eyez' is not one of"):
        read_manifest(csv, image_region="eyez")


def test_bad_folder_image_named_without_row(tmp_path):
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "bad.png").write_bytes(b"not a png")
    df = read_folders(tmp_path, {"open": {"eyes": 1.0}}, image_region="eyes")
    with pytest.raises(DataError, match=r"\n  open/bad.png: unreadable image"):
        validate(df, targets=("eyes",), region="eyes", source=tmp_path)


def test_missing_source_says_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="not found: expected a labels CSV"):
        load_dataset(tmp_path / "nope", targets=("eyes",), region="eyes")
    with pytest.raises(DataError, match="no labels.csv"):
        load_dataset(tmp_path, targets=("eyes",), region="eyes")


def test_shared_eye_state_validates():
    csv = shared_data("eye-state") / "labels.csv"
    df = load_dataset(csv, targets=("eyes",), region="eyes", image_region="eyes")
    assert len(df) > 100 and set(df["eyes"]) <= {0.0, 1.0}
