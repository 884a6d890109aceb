"""Deterministic synthetic face photos with known labels: the project's embedded default data set.

Every photo is a 120x120 RGB face drawn with PIL polygons (at 2x, downsampled with LANCZOS).
Persons have fixed traits (skin, hair, face shape, glasses, gender cues); each photo varies pose,
lighting, noise, background and expression, so the labels can't be read off a single pixel.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from faceattr.data.cache import cache_root
from faceattr.data.regions import eye_boxes, lips_box
from faceattr.errors import ConfigError

GENERATOR_VERSION = 4  # bump when drawing, labelling or the manifest's columns change (v4: the lips', each eye's box)
BOX_COLUMNS = ("face_box", "eyes_box", "mouth_box", "lips_box", "eye_left_box", "eye_right_box")

PHOTO = 120  # photo side, pixels
SS = 2  # supersampling factor: draw at 2x, then LANCZOS down for anti-aliasing
CENTER, CENTER_JITTER = (60.0, 60.0), 8.0
SCALE_RANGE, MAX_ROTATION = (0.85, 1.15), 10.0  # degrees
LIGHT_RANGE, MAX_GRADIENT = (0.65, 1.25), 0.25  # global gain; left-right gain slope
NOISE_RANGE = (2.0, 7.0)  # std of pixel noise, 0..255 units
BG_DARK, BG_BRIGHT = 18.0, 245.0  # intrinsic background grey for label 0 and 1
# Face geometry in photo pixels at scale 1, origin at the face centre, y pointing down.
FACE_TOP = 30.0  # crown of the skull above the centre
EYE_Y, EYE_HALF_W, EYE_UP, EYE_LO, IRIS_R = -5.0, 5.0, 3.4, 2.2, 2.7
BROW_GAP = 5.5  # eyebrow height above the eye centre
MOUTH_Y, MOUTH_MAX_OPEN = 15.0, 9.0  # mouth line; interior height when fully open
EYES_ASPECT = 60 / 32  # eyes crop, width:height
HAIR_COLOURS = np.array([(22, 18, 16), (55, 38, 28), (105, 70, 42), (195, 160, 100),
                         (140, 65, 32), (150, 148, 145)], float)
HAIR_WEIGHTS = (0.3, 0.3, 0.18, 0.12, 0.05, 0.05)
EYE_COLOURS = np.array([(70, 45, 25), (110, 80, 45), (70, 110, 60), (70, 110, 160)], float)
# Mouth expression mixture (closed, slightly open, wide open): P(open) higher for females,
# matching the seeds' rounded means (M 0.44, F 0.62).
MOUTH_MIX = {True: (0.49, 0.14, 0.37), False: (0.31, 0.14, 0.55)}


@dataclass(frozen=True)
class Person:
    """Traits fixed for all photos of one person."""

    male: bool
    skin: tuple
    hair: tuple
    hair_style: str  # "short", "long" or "receding"
    hair_volume: float  # hair thickness above the skull
    hair_length: float  # how far long hair falls below the face centre
    hairline: float  # y of the hairline at the middle of the forehead
    face_w: float  # half-width of the face
    chin: float  # chin distance below the centre (mouth closed)
    jaw: float  # superellipse exponent of the lower face: 2 round, >2 square, <2 pointed
    eye_dx: float
    eye_colour: tuple
    brow: float  # eyebrow thickness
    lips: tuple
    mouth_w: float  # mouth half-width
    beard: float  # beard/stubble opacity, 0 for none
    glasses: tuple | None  # (frame rgb, lens rgba, frame width) or None


@dataclass(frozen=True)
class Pose:
    """What varies from photo to photo besides the labels."""

    cx: float
    cy: float
    scale: float
    angle: float  # degrees, counter-clockwise on screen
    light: float
    gradient: float
    noise: float
    noise_seed: int
    bg_tint: tuple  # per-channel multipliers around 1, mean 1
    clothes: tuple
    gaze: float  # iris shift, pixels


def _rgb(c, alpha=None):
    """Colour as a PIL int tuple, clipped to 0..255 (optionally with alpha)."""
    t = tuple(int(round(min(255.0, max(0.0, v)))) for v in c)
    return t if alpha is None else (*t, int(alpha))


def _sample_person(rng, male):
    """Fixed traits of one person."""
    skin = np.array([95, 62, 45]) + rng.random() * np.array([150, 148, 140])
    hair = HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_WEIGHTS)] * rng.uniform(0.85, 1.15)
    # Every gender cue is drawn from overlapping distributions so gender isn't perfectly separable.
    u = rng.random()
    if male:
        style = "long" if u < 0.15 else "receding" if u < 0.27 else "short"
    else:
        style = "short" if u < 0.2 else "long"
    lipstick = not male and rng.random() < 0.4
    lips = (rng.uniform(150, 200), rng.uniform(30, 70), rng.uniform(50, 90)) if lipstick else \
        skin * np.array([0.85, 0.6, 0.6]) + rng.uniform(0, 25, 3) * np.array([1, 0.2, 0.2])
    glasses = None
    if rng.random() < 0.2:
        lens_alpha = rng.uniform(90, 170) if rng.random() < 0.3 else rng.uniform(15, 50)
        glasses = (_rgb(rng.uniform(10, 160) * np.ones(3) + rng.uniform(-10, 10, 3)),
                   _rgb(rng.uniform(30, 90, 3), lens_alpha), rng.uniform(0.6, 1.4))
    return Person(
        male=male, skin=tuple(skin * rng.uniform(0.96, 1.04, 3)), hair=tuple(hair), hair_style=style,
        hair_volume=rng.uniform(2.5, 7), hair_length=rng.uniform(25, 60),
        hairline=(-26 if style == "receding" else -20) + rng.uniform(0, 7 if male else 9),
        face_w=rng.normal(24.5 if male else 22.8, 1.2), chin=rng.normal(30.5 if male else 29.5, 1.2),
        jaw=max(1.6, rng.normal(2.8 if male else 2.15, 0.35)), eye_dx=rng.uniform(10.5, 12.5),
        eye_colour=tuple(EYE_COLOURS[rng.integers(len(EYE_COLOURS))]),
        brow=max(0.8, rng.normal(2.1 if male else 1.5, 0.35)), lips=tuple(lips),
        mouth_w=rng.uniform(7, 9.5), beard=rng.uniform(50, 220) if male and rng.random() < 0.35 else 0.0,
        glasses=glasses)


def _sample_pose(rng):
    """Per-photo pose, lighting, noise, background tint and clothes."""
    return Pose(
        cx=CENTER[0] + rng.uniform(-CENTER_JITTER, CENTER_JITTER),
        cy=CENTER[1] + rng.uniform(-CENTER_JITTER, CENTER_JITTER),
        scale=rng.uniform(*SCALE_RANGE), angle=rng.uniform(-MAX_ROTATION, MAX_ROTATION),
        light=rng.uniform(*LIGHT_RANGE), gradient=rng.uniform(-MAX_GRADIENT, MAX_GRADIENT),
        noise=rng.uniform(*NOISE_RANGE), noise_seed=int(rng.integers(2**32)),
        bg_tint=tuple(1 + (t := rng.uniform(-0.12, 0.12, 3)) - t.mean()),
        clothes=tuple(rng.uniform(25, 225, 3)), gaze=rng.uniform(-1, 1))


def _sample_labels(rng, male):
    """Continuous ground truth: background spread over 0..1, eyes mostly open, mouth bimodal."""
    u = rng.random()
    eyes = rng.uniform(0.8, 1) if u < 0.85 else rng.uniform(0.3, 0.72) if u < 0.97 else rng.uniform(0, 0.22)
    kind = rng.choice(3, p=MOUTH_MIX[male])
    mouth = rng.uniform(*((0, 0.2), (0.3, 0.7), (0.8, 1))[kind])
    # Beta(1.5, 1.5) rather than flatter: rounded labels then have the seeds' MSE-to-mean ~0.09.
    return {"background": rng.beta(1.5, 1.5), "eyes": eyes, "mouth": mouth}


@lru_cache(maxsize=None)
def _t(n):
    """n steps 0..1 and sin(pi t), cached: shared by every curve (speed)."""
    t = np.linspace(0, 1, n)
    s = np.sin(np.pi * t)
    t.flags.writeable = s.flags.writeable = False
    return t, s


@lru_cache(maxsize=None)
def _arc(n, t0, t1):
    t = np.linspace(t0, t1, n, endpoint=abs(t1 - t0) < 2 * math.pi)
    unit = np.stack([np.cos(t), np.sin(t)], 1)
    unit.flags.writeable = False
    return unit


def _ellipse(cx, cy, rx, ry, n=24, t0=0.0, t1=2 * math.pi):
    return _arc(n, t0, t1) * (rx, ry) + (cx, cy)


def _band(xs, top, bottom):
    """Polygon between two curves over the same xs: along the top, back along the bottom."""
    return np.stack([np.concatenate([xs, xs[::-1]]), np.concatenate([top, bottom[::-1]])], 1)


def _face_outline(p, chin, n=48):
    """Ellipse on top, superellipse (exponent p.jaw) below: the jaw shape is a gender cue."""
    c, s = _arc(n, 0.0, 2 * math.pi).T
    e = 2 / p.jaw
    x = np.where(s < 0, p.face_w * c, p.face_w * np.sign(c) * np.abs(c) ** e)
    y = np.where(s < 0, FACE_TOP * s, chin * np.abs(s) ** e)
    return np.stack([x, y], 1)


def _curve(x0, x1, y, bulge, n=12, power=1.0):
    """Points from x0 to x1 at height y + bulge*sin(pi t)**power (bulge may be an array per point)."""
    t, s = _t(n)
    return np.stack([x0 + (x1 - x0) * t, y + bulge * s ** power], 1)


class _Canvas:
    """A 2x canvas plus the photo's one affine (scale, rotate, translate) applied to every shape."""

    def __init__(self, pose, colour):
        a = math.radians(pose.angle)
        self.m = pose.scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        self.t = np.array([pose.cx, pose.cy])
        self.scale = pose.scale
        self.img = Image.new("RGB", (PHOTO * SS, PHOTO * SS), _rgb(colour))
        self.draw = ImageDraw.Draw(self.img, "RGBA")  # RGBA: alpha fills blend into the photo

    def to_photo(self, pts):
        return np.asarray(pts, float) @ self.m.T + self.t

    def _xy(self, pts):
        return (self.to_photo(pts) * SS).ravel().tolist()  # flat [x0, y0, x1, ...]: PIL's fastest input

    def poly(self, pts, fill):
        self.draw.polygon(self._xy(pts), fill=fill)

    def line(self, pts, fill, width):
        self.draw.line(self._xy(pts), fill=fill, width=max(1, round(width * self.scale * SS)), joint="curve")


def _box(centre, w, h):
    return (centre[0] - w / 2, centre[1] - h / 2, centre[0] + w / 2, centre[1] + h / 2)


def draw_photo(person, pose, labels):
    """Draw one photo; return (120x120 RGB PIL image, {box column: (x0, y0, x1, y1)})."""
    p, eyes, mouth = person, float(labels["eyes"]), float(labels["mouth"])
    bg = BG_DARK + (BG_BRIGHT - BG_DARK) * float(labels["background"])
    cv = _Canvas(pose, bg * np.array(pose.bg_tint))
    skin = np.array(p.skin)
    hair = _rgb(p.hair)
    opening = MOUTH_MAX_OPEN * mouth
    chin = p.chin + 0.4 * opening  # the jaw drops as the mouth opens
    hw, htop = p.face_w + min(p.hair_volume, 4), FACE_TOP + p.hair_volume

    # Body, long hair behind the head, neck, ears, face.
    cv.poly([(-75, 80), (-30, 38), (30, 38), (75, 80)], _rgb(pose.clothes))
    if p.hair_style == "long":
        arc = _ellipse(0, 0, hw, htop, 20, math.pi, 2 * math.pi)
        cv.poly([*arc, (hw + 4, p.hair_length), (-hw - 4, p.hair_length)], hair)
    cv.poly([(-0.42 * p.face_w, 10), (0.42 * p.face_w, 10), (0.5 * p.face_w, 42), (-0.5 * p.face_w, 42)],
            _rgb(skin * 0.85))
    if p.hair_style != "long":  # long hair covers the ears
        for sx in (-1, 1):
            cv.poly(_ellipse(sx * p.face_w, EYE_Y + 4, 3.2, 5.5, 16), _rgb(skin * 0.93))
    cv.poly(_face_outline(p, chin), _rgb(skin))
    if p.beard:  # stubble (faint) to full beard (opaque): from the cheeks down, around the mouth
        lower = _face_outline(p, chin + p.beard / 80)
        lower = lower[lower[:, 1] >= 0]  # right cheek, chin, left cheek, in that order
        cv.poly([*lower, *_curve(-p.face_w, p.face_w, 3, MOUTH_Y - 7, 12, 0.6)], _rgb(p.hair, p.beard))

    # Hair on top: outer arc over the crown, back along the hairline.
    s0 = math.asin(min(1.0, 9 / htop))
    crown = _ellipse(0, 0, hw, htop, 20, math.pi + s0, 2 * math.pi - s0)
    hairline = _curve(p.face_w, -p.face_w, -8, p.hairline + 8, 14, 0.6)
    cv.poly([*crown, *hairline], hair)

    # Eyebrows, eyes (sclera, iris, pupil, then lids closing over them), lashes.
    closed_y = EYE_Y + 0.5 * EYE_LO
    for ex in (-p.eye_dx, p.eye_dx):
        x0, x1 = ex - EYE_HALF_W, ex + EYE_HALF_W
        arch = _curve(x0 - (1.5 if ex < 0 else 1), x1 + (1 if ex < 0 else 1.5), EYE_Y - BROW_GAP, -1.5)
        thick = p.brow * (0.6 + 0.4 * _t(len(arch))[1])
        cv.poly(_band(arch[:, 0], arch[:, 1] - thick, arch[:, 1]), _rgb(np.array(p.hair) * 0.8))
        t, s = _t(14)
        up_open, lo_open = EYE_Y - EYE_UP * s ** 0.8, EYE_Y + EYE_LO * s ** 0.8
        closed = closed_y + 0.6 * s
        xs = x0 + (x1 - x0) * t
        cv.poly(_band(xs, up_open, lo_open), (238, 234, 228))
        cv.poly(_ellipse(ex + pose.gaze, EYE_Y - 0.3, IRIS_R, IRIS_R, 16), _rgb(p.eye_colour))
        cv.poly(_ellipse(ex + pose.gaze, EYE_Y - 0.3, 1.2, 1.2, 10), (15, 12, 12))
        cv.poly(_ellipse(ex + pose.gaze + 0.8, EYE_Y - 1.1, 0.45, 0.45, 6), (250, 250, 250))
        # Lids: the upper one sweeps down fully, the lower one rises a little; at 0 they meet on a line.
        up = closed + (up_open - closed) * eyes
        lo = closed + (lo_open - closed) * math.sqrt(eyes)
        lid = _rgb(skin * 0.9)
        cv.poly(_band(xs, up_open - 1.5, up), lid)  # margins cover the iris where it pokes out
        cv.poly(_band(xs, lo, lo_open + 1.5), lid)
        cv.line(np.stack([xs, up], 1), (25, 18, 15), 0.9 if p.male else 1.2)

    # Nose: a shaded ridge and two nostrils.
    cv.line([(-0.6, EYE_Y + 2), (-1.6, 6.5), (0.5, 7.5)], _rgb(skin * 0.78), 0.8)
    for sx in (-1.8, 1.8):
        cv.poly(_ellipse(sx, 7.6, 1.1, 0.6, 10), _rgb(skin * 0.5))

    # Mouth: lips around a dark interior whose height is the openness; upper teeth when open.
    w, (t, s) = p.mouth_w, _t(16)
    xs = -w + 2 * w * t
    in_top, in_bot = MOUTH_Y - 0.2 * opening * s ** 0.7, MOUTH_Y + 0.8 * opening * s ** 0.7
    cv.poly(_band(xs, in_top - 2.4 * s ** 0.5, in_bot + 2.8 * s ** 0.5), _rgb(p.lips))
    if opening > 0.3:
        cv.poly(_band(xs, in_top, in_bot), (55, 18, 22))
        teeth = in_top + np.minimum(2.2, 0.35 * (in_bot - in_top))
        cv.poly(_band(xs * 0.8, in_top, teeth), (228, 222, 205))  # narrower: stays inside
    cv.line(np.stack([xs, in_top], 1), _rgb(np.array(p.lips) * 0.55), 0.6)

    if p.glasses:  # lenses tint (partly hide) the eyes
        frame, lens, fw = p.glasses
        rims = [_ellipse(ex, EYE_Y + 0.3, EYE_HALF_W + 2.5, 4.8, 24) for ex in (-p.eye_dx, p.eye_dx)]
        for rim in rims:
            cv.poly(rim, lens)
            cv.line([*rim, rim[0]], frame, fw)
        inner = p.eye_dx - EYE_HALF_W - 2.5
        cv.line([(-inner, EYE_Y), (inner, EYE_Y)], frame, fw)
        for sx in (-1, 1):
            cv.line([(sx * (p.eye_dx + EYE_HALF_W + 2.5), EYE_Y), (sx * p.face_w, EYE_Y - 1)], frame, fw)

    # Lighting (global gain and left-right gradient) and pixel noise act on the whole photo.
    arr = np.asarray(cv.img.resize((PHOTO, PHOTO), Image.LANCZOS), np.float32)
    gain = pose.light * (1 + pose.gradient * np.linspace(-1, 1, PHOTO, dtype=np.float32))
    # Uniform noise scaled to std pose.noise: looks the same as Gaussian here, and is 3x faster to draw.
    noise = np.random.default_rng(pose.noise_seed).random(arr.shape, dtype=np.float32) - 0.5
    arr = arr * gain[None, :, None] + (pose.noise * math.sqrt(12)) * noise
    img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    return img, _boxes(cv, p, chin, opening, w)


def _boxes(cv, p, chin, opening, mouth_w):
    """Axis-aligned crop boxes around the rotated landmarks, in photo pixels."""
    face = cv.to_photo(_face_outline(p, chin))
    lo, hi = face.min(0), face.max(0)
    side = 1.08 * (hi - lo).max()
    eyes_c = cv.to_photo([(-p.eye_dx, EYE_Y), (p.eye_dx, EYE_Y)])
    corners = cv.to_photo([(sx * (p.eye_dx + EYE_HALF_W), EYE_Y + dy) for sx in (-1, 1) for dy in (-EYE_UP, EYE_LO)])
    span = corners.max(0) - corners.min(0)
    ew = max(1.6 * np.linalg.norm(eyes_c[1] - eyes_c[0]), span[0] + 6 * cv.scale,
             (span[1] + 4 * cv.scale) * EYES_ASPECT)
    mouth = cv.to_photo([(sx * mouth_w, MOUTH_Y + dy) for sx in (-1, 0, 1)
                         for dy in (-0.2 * opening - 2.4, 0.8 * opening + 2.8)])
    mspan = mouth.max(0) - mouth.min(0)
    mside = max(3.2 * mouth_w * cv.scale, 1.2 * mspan.max())
    return {"face_box": _box((lo + hi) / 2, side, side), "eyes_box": _box(eyes_c.mean(0), ew, ew / EYES_ASPECT),
            "mouth_box": _box((mouth.min(0) + mouth.max(0)) / 2, mside, mside),
            "lips_box": lips_box(*cv.to_photo([(-mouth_w, MOUTH_Y), (mouth_w, MOUTH_Y)])),
            **eye_boxes(*sorted(eyes_c, key=lambda c: c[0]))}   # the image's left eye first


# Rounded labels imitate the seeds' human labellers, who saw a value and wrote 0, 0.5 or 1: they
# misjudge by about this much, so labels near a boundary can land either side. Without it a CNN
# recovers the drawn ground truth almost exactly (mouth baseline ratio ~190 vs the seeds' 7.9).
LABELLER_NOISE = 0.1


def _round_label(x):
    return math.floor(x * 2 + 0.5) / 2  # nearest of 0 / 0.5 / 1, as the seeds' labellers did


def _labeller(rng, truth: dict) -> dict:
    """What a labeller writes down for continuous ground truth: a noisy judgement, rounded."""
    return {k: _round_label(min(1.0, max(0.0, v + rng.normal(0, LABELLER_NOISE)))) for k, v in truth.items()}


def _fmt(x):
    return repr(round(float(x), 4))


def generate(out_dir, size=2000, seed=0, rounded=True, n_persons=None) -> Path:
    """Write out_dir/images/00000.png ... and out_dir/labels.csv; return the CSV path.

    Deterministic: the same arguments give byte-identical files. Every photo has its own RNG
    (seeded by [seed, 1, index]) so generation could be parallelised without changing output.
    """
    if size < 2 or size % 2:
        raise ConfigError(f"size must be an even number >= 2 (half male, half female), got {size}")
    # Two photos a person by default: with 10 a gender CNN learned to recognise the 160 training
    # people and reached 78% on unseen ones; with 1,000 people it learns gender (~90%).
    n_persons = max(2, size // 2) if n_persons is None else n_persons
    if not 2 <= n_persons <= size:
        raise ConfigError(f"n_persons must be between 2 and size ({size}), got {n_persons}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    person_male = rng.permutation(np.arange(n_persons) < n_persons // 2)
    persons = [_sample_person(np.random.default_rng([seed, 0, j]), bool(m)) for j, m in enumerate(person_male)]
    photo_male = rng.permutation(np.arange(size) < size // 2)
    photo_person = np.empty(size, int)
    for male in (True, False):  # each gender's photos spread evenly over that gender's persons
        idx = np.flatnonzero(photo_male == male)
        photo_person[idx] = rng.permutation(np.resize(np.flatnonzero(person_male == male), len(idx)))

    columns = ["path", "background", "eyes", "mouth", "gender", "person", *BOX_COLUMNS,
               "background_true", "eyes_true", "mouth_true"]
    csv_path = out / "labels.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for i in tqdm(range(size), desc="synthetic faces", disable=size < 200):
            prng = np.random.default_rng([seed, 1, i])
            j = int(photo_person[i])
            person = persons[j]
            labels = _sample_labels(prng, person.male)
            img, boxes = draw_photo(person, _sample_pose(prng), labels)
            rel = f"images/{i:05d}.png"
            img.save(out / rel, format="PNG", compress_level=1)  # noisy pixels barely compress: favour speed
            shown = _labeller(prng, labels) if rounded else labels
            writer.writerow([rel, *(_fmt(shown[k]) for k in ("background", "eyes", "mouth")),
                             "male" if person.male else "female", f"p{j:04d}",
                             *(" ".join(f"{v:.1f}" for v in boxes[k]) for k in BOX_COLUMNS),
                             *(_fmt(labels[k]) for k in ("background", "eyes", "mouth"))])
    return csv_path


def default_dataset(size=2000, seed=0, rounded=True, cache_dir=None, n_persons=None) -> Path:
    """The cached default data set (generated once, then reused); returns its labels.csv path."""
    root = Path(cache_dir) if cache_dir else cache_root()
    persons = "" if n_persons is None else f"-p{n_persons}"
    name = f"synthetic-v{GENERATOR_VERSION}-seed{seed}-n{size}{persons}-{'rounded' if rounded else 'continuous'}"
    final = root.expanduser() / name
    csv_path = final / "labels.csv"
    if csv_path.is_file():
        return csv_path
    final.parent.mkdir(parents=True, exist_ok=True)
    # Generate into a sibling temp dir and rename it into place, so a crash never leaves half a data set.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
    try:
        generate(tmp, size=size, seed=seed, rounded=rounded, n_persons=n_persons)
        try:
            os.rename(tmp, final)
        except OSError:
            if not csv_path.is_file():  # not a lost race: a real problem
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there if another process won the race
    return csv_path
