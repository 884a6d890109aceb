"""Eye and mouth aspect ratios from dlib's 68 facial landmarks: the training-free baselines of the eyes
and mouth models on whole faces (a model that cannot beat a ratio of six points has learnt little).

- EAR, the eye aspect ratio (Soukupová and Čech, 2016): (|p2-p6| + |p3-p5|) / (2 |p1-p4|) over one eye's
  six points (dlib's 36-41: the eye on the image's left, the person's right eye; 42-47: the other).
  Open eyes read ~0.25-0.35, closed ones below ~0.2.
- MAR, the inner-lip mouth aspect ratio: (|61-67| + |62-66| + |63-65|) / (3 |60-64|) over the inner lip
  contour (60-67): ~0 for closed lips, above ~0.5 for a yawn.

Licence: the 68-point model (`shape_predictor_68_face_landmarks.dat`, shipped by the
`face_recognition_models` package and run by dlib) was trained on the iBUG 300-W data set, whose terms
exclude commercial use. It serves here as a research baseline in training runs and benchmarks only;
no served model carries it.

Landmarks need a whole face: they are computed for whole photos with a `face_box` (the landmark cut of
data/loading.py) and cached by content (`$FACEATTR_CACHE/landmarks/<sha1[:2]>/<sha1>-<box hash>.npy`);
close-up crops get NaN.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.data.cache import by_content, cache_root, npy_bytes, write_atomic
from faceattr.data.regions import load_rgb, parse_box
from faceattr.errors import FaceattrError

POINTS = 68
EYES = {"left": tuple(range(36, 42)), "right": tuple(range(42, 48))}   # by the side of the image (regions.CUTS)
INNER_LIPS = tuple(range(60, 68))
# What to call closed / yawning when validation holds one class only (nothing to choose a threshold
# from): the values the ratios' authors and the drowsiness literature use.
DEFAULT_THRESHOLDS = {"eyes": 0.2, "mouth": 0.5}

_lock = threading.Lock()
_predictor = None


def eye_aspect_ratio(points: np.ndarray, side: str | None = None) -> float:
    """EAR of one eye (`side`: left / right of the image) or the mean of both (None)."""
    points = np.asarray(points, float)
    sides = [side] if side else list(EYES)
    ratios = []
    for name in sides:
        p1, p2, p3, p4, p5, p6 = points[list(EYES[name])]
        ratios.append((np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / (2 * max(np.linalg.norm(p1 - p4), 1e-9)))
    return float(np.mean(ratios))


def mouth_aspect_ratio(points: np.ndarray) -> float:
    """MAR of the inner lips."""
    p = np.asarray(points, float)[list(INNER_LIPS)]   # p[0] = point 60 (left corner), p[4] = 64
    opening = np.linalg.norm(p[1] - p[7]) + np.linalg.norm(p[2] - p[6]) + np.linalg.norm(p[3] - p[5])
    return float(opening / (3 * max(np.linalg.norm(p[0] - p[4]), 1e-9)))


def predictor():
    """dlib's 68-point shape predictor (loaded once per process)."""
    global _predictor
    with _lock:
        if _predictor is None:
            try:
                import dlib
                import face_recognition_models
            except ImportError as exc:
                raise FaceattrError("the landmark baselines need dlib and face_recognition_models: "
                                    "pip install dlib-bin face_recognition_models") from exc
            _predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        return _predictor


def landmarks(image, face_box) -> np.ndarray:
    """(68, 2) points of the face in `face_box` ("x0 y0 x1 y1") of `image` (path, bytes, PIL or array)."""
    import dlib

    pixels = np.ascontiguousarray(image if isinstance(image, np.ndarray) else np.asarray(load_rgb(image)))
    x0, y0, x1, y1 = parse_box(face_box)
    shape = predictor()(pixels, dlib.rectangle(round(x0), round(y0), round(x1), round(y1)))
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(POINTS)], float)


def row_landmarks(path: str, face_box: str, cache_dir: Path | None = None) -> np.ndarray:
    """`landmarks` of a photo file, cached by its content and the box."""
    with open(path, "rb") as fh:
        content = fh.read()
    sha1 = hashlib.sha1(content).hexdigest()
    tag = hashlib.sha1(str(face_box).encode()).hexdigest()[:10]
    entry = by_content(cache_dir or cache_root() / "landmarks", sha1, f"-{tag}.npy")
    try:
        return np.load(entry)
    except (OSError, ValueError):
        pass
    points = landmarks(content, face_box)
    write_atomic(entry, npy_bytes(points))
    return points


def aspect_ratios(frame: pd.DataFrame, target: str) -> np.ndarray:
    """Each row's ratio for `target` (EAR for eyes: of the row's own eye when it is one cut of a photo,
    MAR for mouth); NaN for rows that are not whole photos with a face box, or targets without a ratio."""
    out = np.full(len(frame), np.nan)
    if target not in DEFAULT_THRESHOLDS or "face_box" not in frame:
        return out
    for i, row in enumerate(frame.to_dict("records")):
        if row.get("image_region") != "photo" or not isinstance(row.get("face_box"), str):
            continue
        points = row_landmarks(row["path"], row["face_box"])
        cut = row.get("cut") if isinstance(row.get("cut"), str) else None
        out[i] = eye_aspect_ratio(points, cut) if target == "eyes" else mouth_aspect_ratio(points)
    return out
