"""Image loading and region crops: the ONE implementation used at training time and in the served model.

Keeping a single code path matters: any difference in decoding, colour conversion or resampling between
training and serving silently shifts the model's inputs.
"""

from __future__ import annotations

import io
import math
import os
import re

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from faceattr.errors import ConfigError, DataError

# (height, width). `eye`: ONE eye, as close-up eye sets show it (eye-state: ~96x93 px around one eye
# and its brow); `eyes`: the band across both eyes, as a face photo shows it.
# `lips`: the lips alone, as close-up mouth sets show them (yawn-mouth: ~50x27 px tight around the lips);
# `mouth`: the mouth with some chin and nose around it, as the synthetic faces' mouth box.
REGION_SIZES = {"photo": (120, 120), "face": (60, 60), "eyes": (32, 60), "mouth": (60, 60), "eye": (48, 48),
                "lips": (32, 60)}
# Regions cut more than once from a whole photo, named by the side of the image each cut is on
# (MTCNN's `left_eye` is the eye on the image's left, the person's right eye). A photo gives one crop
# per cut; its answer combines them (serving) and training reads each as its own row (data/loading).
CUTS = {"eye": ("left", "right")}
# One eye's box, in units of the inter-eye distance D: eye-state's crops show the eye's corner-to-corner
# span (~0.45 D on a face) over ~60% of their width with the brow at the top edge, so a square of
# 0.75 D around the eye centre, raised by 0.05 of its side towards the brow (see docs/crops.md).
EYE_SIDE_D, EYE_RAISE = 0.75, 0.05
# The lips' box, in units of the mouth-corner distance W: yawn-mouth's closed mouths fill ~90% of their
# crop's width, so 1.15 W wide, the region's 60:32 tall, centred 0.05 W below the corner line (the lower
# lip is the fuller one).
LIPS_WIDTH_W, LIPS_DOWN_W = 1.15, 0.05

# How a model's training crops were made (recorded in the logged model, faceattr/tracking/packaging.py):
# `photo`: cut at training time from whole photos by their boxes, with the code below; `faceattr`: ready
# crops that `faceattr prepare` cut with the same code; `ready`: crops made elsewhere, whose region the
# data set declares (`image_region`). Ready crops match the served cut only where that cut was set to
# how such crops look: `eye` to close-up eye sets (eye-state), `lips` to close-up mouth sets
# (yawn-mouth), `face` to aligned face crops (UTKFace's 200x200 faces), `photo` is the whole image anyway.
MADE_BY = ("photo", "faceattr", "ready")
READY_CROPS_MATCH = ("photo", "face", "eye", "lips")

# A photo larger than this is refused from its header, before it is decoded: a 445 KB PNG of 12,000 x
# 12,000 pixels decodes to ~430 MB and took 25 s and ~2 GB through MTCNN. 40 megapixels holds any phone
# or camera photo; FACEATTR_MAX_MEGAPIXELS changes it where photos are read (a server, a batch job).
MAX_MEGAPIXELS = float(os.environ.get("FACEATTR_MAX_MEGAPIXELS", "40"))
# A whole photo's region is cut only from a box at least this share of the model's crop each way (an eye:
# 12 x 12 px of the photo for the 48 x 48 crop). A smaller box would be enlarged more than 4x into a blur
# the model never learnt from, and its answer a guess: the photo gets an error row instead (FaceTooSmall).
# Not larger: at 1/2 LFW's 250 px portraits (lips 26-30 px wide) were refused, at 1/3 half the synthetic
# 120 px faces (eyes 14-19 px), and the photo models learn from both and read them well.
MIN_CUT_SHARE = 1 / 4
_WHITE = (255, 255, 255, 255)
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def load_rgb(source) -> Image.Image:
    """Decode a path, bytes or PIL image into an RGB image.

    Any mode is accepted; transparency is composited on white (a transparent background is "no data",
    and black would look like a dark object), 16-bit images are scaled to 8 bits, and the EXIF
    orientation is applied so phone photos are upright. Raises DataError naming the file when the data
    cannot be decoded completely (truncated files fail here, not later inside training), and before
    decoding when its header says it is over MAX_MEGAPIXELS.
    """
    # A library elsewhere may have switched this on; truncated files must fail, not decode half grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if isinstance(source, Image.Image):
        name, opener = "<image>", None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name, opener = "<bytes>", lambda: Image.open(io.BytesIO(bytes(source)))
    else:
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise DataError(f"{name}: file not found")
        opener = lambda: Image.open(name)  # noqa: E731
    try:
        if opener is None:
            return _to_rgb(ImageOps.exif_transpose(source))
        with opener() as image:
            width, height = image.size   # from the header: nothing is decoded yet
            if width * height > MAX_MEGAPIXELS * 1e6:
                raise TooLarge(f"{name}: {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), over "
                               f"the limit of {MAX_MEGAPIXELS:g} megapixels (FACEATTR_MAX_MEGAPIXELS); not decoded")
            image.load()  # really decode now: Image.open only reads the header
            return _to_rgb(ImageOps.exif_transpose(image))
    except TooLarge:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad data
        raise DataError(f"{name}: unreadable image ({_reason(exc, name, source)})") from exc


class TooLarge(DataError):
    """A photo whose header says it is over MAX_MEGAPIXELS."""


class FaceTooSmall(DataError):
    """A whole photo whose face is too small for the model's crop (under min_cut)."""


def min_cut(region: str) -> tuple[int, int]:
    """The smallest (height, width) in pixels of a whole photo that `region` is cut from (MIN_CUT_SHARE)."""
    height, width = REGION_SIZES[region]
    return math.ceil(height * MIN_CUT_SHARE), math.ceil(width * MIN_CUT_SHARE)


def check_cut_size(region: str, box) -> None:
    """FaceTooSmall when `box` (x0, y0, x1, y1) is under min_cut(region) either way."""
    (least_h, least_w), (x0, y0, x1, y1) = min_cut(region), box
    if x1 - x0 < least_w or y1 - y0 < least_h:
        height, width = REGION_SIZES[region]
        raise FaceTooSmall(f"the face is too small: its {region} is {x1 - x0:.1f} x {y1 - y0:.1f} px, under the "
                           f"{least_w} x {least_h} px minimum (a quarter of the model's {width} x {height} crop)")


def _reason(exc: BaseException, name: str, source) -> str:
    """What is wrong with the file, in words: empty, not an image file, truncated; else PIL's message
    without the file name (or the in-memory object's address) it repeats."""
    if isinstance(source, (bytes, bytearray, memoryview)) and len(source) == 0 or \
            (isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0):
        return "an empty file"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file (JPEG, PNG, BMP, WebP, ...)"
    if isinstance(exc, Image.DecompressionBombError):
        return "over Pillow's decompression-bomb limit"
    text = str(exc).replace(repr(name), "").replace(name, "").strip(" :'\"") or type(exc).__name__
    text = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "the data", text)
    if "truncated" in text.lower() or "broken data stream" in text:
        return f"a truncated file ({text})"
    return " ".join(text.split())


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB."""
    if image.mode in _HIGH_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 16-bit range 0..65535 -> 0..255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def box_columns(region: str) -> list[str]:
    """The manifest columns holding `region`'s box(es) in a whole photo: `eyes_box`; `eye_left_box`,
    `eye_right_box` for a region cut once per side (CUTS)."""
    return [f"{region}_{cut}_box" for cut in CUTS[region]] if region in CUTS else [f"{region}_box"]


def eye_boxes(left, right) -> dict[str, tuple[float, float, float, float]]:
    """Each eye's box (x0, y0, x1, y1) from the two eye centres (the image's left one first): the one
    geometry of the `eye` region, for MTCNN's keypoints (data/faces.py) and the synthetic faces alike."""
    left, right = np.asarray(left, float), np.asarray(right, float)
    side = EYE_SIDE_D * max(float(np.linalg.norm(right - left)), 1.0)
    axis = (right - left) / max(float(np.linalg.norm(right - left)), 1e-9)
    up = np.array([axis[1], -axis[0]])            # perpendicular to the eye line, towards the brows
    out = {}
    for cut, centre in zip(CUTS["eye"], (left, right)):
        cx, cy = centre + EYE_RAISE * side * up
        out[f"eye_{cut}_box"] = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return out


def photo_refusal(crops: dict | None) -> str | None:
    """Why a model whose training crops were made as `crops` ({"region", "made_by"}) must not be served
    whole photos (its region's cut would show it something else than it learnt), or None when it may.

    None for models logged before the record existed: they answer as they always did."""
    if crops is None or crops["made_by"] != "ready" or crops["region"] in READY_CROPS_MATCH:
        return None
    region = crops["region"]
    hint = " (close-ups of one eye are region `eye`)" if region == "eyes" else ""
    return (f"this model learnt from ready {region} crops made elsewhere{hint}, and faceattr's {region} cut of "
            f"a whole photo is not known to look like them, so it cannot read whole photos: send crops like its "
            f"training crops (kind=crop), or use a model trained on whole photos or `faceattr prepare` crops")


def lips_box(left, right) -> tuple[float, float, float, float]:
    """The lips' box (x0, y0, x1, y1) from the two mouth corners: the one geometry of region `lips`."""
    left, right = np.asarray(left, float), np.asarray(right, float)
    span = max(float(np.linalg.norm(right - left)), 1.0)
    axis = (right - left) / span
    down = np.array([-axis[1], axis[0]])          # perpendicular to the mouth line, towards the chin
    width = LIPS_WIDTH_W * span
    height = width * REGION_SIZES["lips"][0] / REGION_SIZES["lips"][1]
    cx, cy = (left + right) / 2 + LIPS_DOWN_W * span * down
    return (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)


def parse_box(text) -> tuple[float, float, float, float]:
    """Parse "x0 y0 x1 y1" (pixels; commas also accepted) into floats; DataError on bad text."""
    try:
        parts = text.replace(",", " ").split() if isinstance(text, str) else list(text)
        box = tuple(float(v) for v in parts)
    except (TypeError, ValueError, AttributeError):
        raise DataError(f"box {text!r} is not 'x0 y0 x1 y1'") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise DataError(f"box {text!r} is not 'x0 y0 x1 y1' (four finite numbers)")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise DataError(f"box {text!r} is empty: needs x1 > x0 and y1 > y0")
    return box


def crop_region(image: Image.Image, region: str, box=None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Return a uint8 array (H, W, 3) of REGION_SIZES[region] (or `size`, (H, W): features/hog.py's finer cut).

    box=None: the whole image is the region (a ready crop, or 'photo') and is resized to the size.
    With a box (x0, y0, x1, y1 in pixels, may extend past the border) the box is cut out, with the
    border pixels replicated outwards (black padding would look like hair or shadow), then resized.
    BILINEAR in PIL widens its kernel when shrinking, so downscaling averages the whole area.
    """
    if region not in REGION_SIZES:
        raise ConfigError(f"unknown region {region!r}; expected one of {', '.join(REGION_SIZES)}")
    height, width = size or REGION_SIZES[region]
    if image.mode != "RGB":
        image = _to_rgb(image)
    if box is None:
        out = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.array(out, dtype=np.uint8)
    x0, y0, x1, y1 = parse_box(box)
    # Cut the integer pixel span covering the box; clipping the indices replicates the edge pixels.
    ix0, iy0 = math.floor(x0), math.floor(y0)
    ix1, iy1 = max(math.ceil(x1), ix0 + 1), max(math.ceil(y1), iy0 + 1)
    if 0 <= ix0 and 0 <= iy0 and ix1 <= image.width and iy1 <= image.height:
        patch = image.crop((ix0, iy0, ix1, iy1))  # inside the image: no copy of the whole photo
    else:
        pixels = np.asarray(image)
        rows = np.clip(np.arange(iy0, iy1), 0, image.height - 1)
        cols = np.clip(np.arange(ix0, ix1), 0, image.width - 1)
        patch = Image.fromarray(np.ascontiguousarray(pixels[rows][:, cols]), "RGB")
    out = patch.resize(
        (width, height), Image.Resampling.BILINEAR, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0), reducing_gap=3.0
    )
    return np.array(out, dtype=np.uint8)
