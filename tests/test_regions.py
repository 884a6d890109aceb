"""Image loading and region crops (faceattr.data.regions)."""

import io

import numpy as np
import pytest
from PIL import Image

from faceattr.data.regions import REGION_SIZES, crop_region, load_rgb, parse_box
from faceattr.errors import DataError


@pytest.mark.parametrize("region", sorted(REGION_SIZES))
@pytest.mark.parametrize("box", [None, (5, 5, 45, 35), "-10 -10 70.5 90"])
def test_crop_region_sizes(region, box):
    out = crop_region(Image.new("RGB", (50, 40), (10, 20, 30)), region, box)
    assert out.shape == (*REGION_SIZES[region], 3)
    assert out.dtype == np.uint8


def test_box_past_border_replicates_edge_not_black():
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[:, :] = (200, 50, 50)
    pixels[:, 10:] = (50, 200, 50)  # right half green: padding on the right must be green, left red
    out = crop_region(Image.fromarray(pixels), "face", (-20, -20, 40, 40))
    assert out.min() >= 50  # no black anywhere
    assert tuple(out[30, 0]) == (200, 50, 50) and tuple(out[30, -1]) == (50, 200, 50)


def test_box_crop_takes_the_box():
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[20:40, 60:90] = 255
    out = crop_region(Image.fromarray(pixels), "eyes", "60 20 90 40")
    assert out.min() == 255


def test_crop_accepts_non_rgb_image():
    assert crop_region(Image.new("L", (30, 30), 128), "mouth").shape == (60, 60, 3)


@pytest.mark.parametrize("text", ["1 2 3", "a b c d", "10 10 5 20", None, "1 2 nan 4"])
def test_parse_box_rejects_bad_text(text):
    with pytest.raises(DataError):
        parse_box(text)


def test_parse_box():
    assert parse_box(" 1 2.5, 3 4 ") == (1.0, 2.5, 3.0, 4.0)


def _save(tmp_path, image, name, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_grey_png_loads_as_rgb(tmp_path):
    out = load_rgb(_save(tmp_path, Image.new("L", (7, 5), 77), "g.png"))
    assert out.mode == "RGB" and out.size == (7, 5) and out.getpixel((0, 0)) == (77, 77, 77)


def test_rgba_png_composited_on_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black -> white
    out = load_rgb(_save(tmp_path, image, "a.png"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (255, 0, 0)


def test_la_image_composited_on_white():
    assert load_rgb(Image.new("LA", (3, 3), (0, 0))).getpixel((1, 1)) == (255, 255, 255)


def test_palette_png_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    out = load_rgb(_save(tmp_path, image, "p.png", transparency=0))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((2, 2)) == (0, 0, 255)


def test_16bit_png_scaled_to_8bit(tmp_path):
    pixels = np.array([[0, 32896, 65535]], np.uint16)
    out = load_rgb(_save(tmp_path, Image.fromarray(pixels), "i16.png"))
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "I", "F", "RGBA", "YCbCr"])
def test_any_mode_and_size_converts(mode):
    out = load_rgb(Image.new(mode, (13, 3)))
    assert out.mode == "RGB" and out.size == (13, 3)
    assert crop_region(out, "eyes").shape == (32, 60, 3)


def test_bytes_and_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a phone photo taken upright
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (0, 128, 0)).save(buffer, "JPEG", exif=exif)
    assert load_rgb(buffer.getvalue()).size == (10, 20)


def test_truncated_jpeg_raises_naming_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = _save(tmp_path, Image.fromarray(noise), "broken.jpg", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="broken.jpg"):
        load_rgb(path)


def test_not_an_image_raises(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(DataError, match="notes.png.*unreadable"):
        load_rgb(path)
    with pytest.raises(DataError, match="not found"):
        load_rgb(tmp_path / "missing.png")
