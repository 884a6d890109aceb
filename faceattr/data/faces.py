"""Find the face in a photo (MTCNN) and turn its box + 5 landmarks into the region boxes of the manifest.

The boxes are the same "x0 y0 x1 y1" strings the synthetic generator writes (`face_box`, `eyes_box`,
`mouth_box`), so every crop still goes through `regions.crop_region`, at training time (`faceattr prepare`)
and at serving time (`find_regions(image)` then `crop_region(image, region, box)`).

Geometry, in units of the inter-eye distance D (matching `synthetic._boxes`, measured at scale 1:
eye centres 23 px apart, eye band 39 x 20.8, mouth square 26.4 = 1.6x the mouth width, face square
~2.9 D around the whole head):
- eyes: centred between the two eye keypoints, width 1.8 D (synthetic 1.7 D: corner span + margin;
  real eyes are a little wider relative to D), height width * 32/60;
- mouth: square centred between the mouth corners, moved down by 0.1 mouth widths (the synthetic box is
  centred on the lips, which sit below the corner line), side max(1.6 x mouth width (as synthetic), 1.2 D);
- face: square centred on MTCNN's box, side 1.15 x its longer side (MTCNN boxes stop at the brows;
  the synthetic face box reaches the crown).
D is max(eye distance, 0.9 x eye-mouth distance), so a turned head (eyes close together) still gets
a band wide enough to hold both eyes.

Several faces (the subject-face rule, `choose_face`): a photo answers for its subject, the person it was
taken of. Among the confident faces, the subject is
1. the largest, when its area is >= SUBJECT_AREA_RATIO x the next one's (clearly the biggest), or else
2. the face whose box holds the photo's centre, when it is the only face that does and it is not small
   next to the largest (area >= 1 / SUBJECT_AREA_RATIO of it): a portrait centres its subject, and a
   stranger of similar size beside it does not hold the centre.
Otherwise (two similar faces off the centre, or both over it) the photo is refused as ambiguous
("several faces") rather than guessing whose label it is. The count of faces found travels with the
boxes (`FACES`), so an answer can say how many there were.

Detections are cached by file content (`detect_photos`): `faceattr prepare` and training from whole
photos share one cache, so a photo is never detected twice.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from faceattr.data.cache import by_content, cache_root, write_atomic
from faceattr.data.regions import (REGION_SIZES, box_columns, check_cut_size, crop_region, eye_boxes, lips_box,
                                    load_rgb, parse_box)
from faceattr.errors import DataError

DETECTOR = "mtcnn-1.0.0-stable"   # the detector and its tie rule (_sort_by_scores_stable): names the cache
MAX_SIDE = 1024            # photos are downscaled to this longer side before detection (cost ~ pixels)
# One MTCNN call holds at most this many pixels. Batching pays off for small photos, whose cost is mostly
# TensorFlow's per-call overhead (200x200: 58 -> 12 ms a photo at 16-64 a call), little for big ones (800x800:
# 179 -> 158 ms at 4 a call) while memory grows with the pixels (peak 0.98 GB at 16 of 200x200, 1.4 GB at 64).
MAX_BATCH_PIXELS = 1_000_000
MIN_CONFIDENCE = 0.90      # faces below this are ignored (MTCNN's ONet threshold is 0.8)
SUBJECT_AREA_RATIO = 2.0   # the largest face must be this much bigger than the next to be "the" subject
FACES = "faces"           # the key of find_regions' answer holding how many confident faces the photo shows
EYES_WIDTH_D, MOUTH_SIDE_W, MOUTH_SIDE_D, MOUTH_DOWN_W, FACE_SIDE_BOX = 1.8, 1.6, 1.2, 0.1, 1.15
EYES_ASPECT = REGION_SIZES["eyes"][1] / REGION_SIZES["eyes"][0]   # 60:32

_lock = threading.Lock()
_detector = None


class NoFace(DataError):
    reason = "no face"


class SeveralFaces(DataError):
    reason = "several faces"


def detector():
    """The process's MTCNN (built once: loading its three networks takes ~1 s)."""
    global _detector
    with _lock:
        if _detector is None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            import mtcnn.utils.bboxes
            from mtcnn import MTCNN

            mtcnn.utils.bboxes.sort_by_scores = _sort_by_scores_stable
            _detector = MTCNN(device="CPU:0")
        return _detector


def _sort_by_scores_stable(tensor, scores, ascending=True):
    """mtcnn's `sort_by_scores` with a stable sort. Its own (numpy's default quicksort) orders equal scores
    by where they lie in the whole batch's array; MTCNN's scores often tie (a softmax saturated at 1.0), and
    non-maximum suppression keeps the first of a tie, so a photo's box moved by a pixel with the photos
    batched beside it (1 of 400 UTKFace photos; answers up to 0.08 apart). Stable, a photo's boxes are the
    same alone or in any batch."""
    order = np.argsort(scores, kind="stable")
    return tensor[order if ascending else order[::-1]]


def one_tf_thread() -> None:
    """Give TensorFlow (MTCNN, Keras) one thread in this process, before it runs anything: a pool of
    worker processes, one per core, uses the cores (prepare, descriptors, batch scoring)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def detect(images: list[Image.Image]) -> list[dict]:
    """Raw MTCNN results for RGB images: per image {"size": [w, h], "faces": [{box, confidence, keypoints}]}.

    Each image is shrunk to MAX_SIDE first (a 6000x4000 photo would cost ~25x more and find the same
    faces); coordinates are mapped back to the original pixels. Images of one size share MTCNN calls (`_run_mtcnn`).
    """
    arrays, scales = [], []
    for image in images:
        scale = min(1.0, MAX_SIDE / max(image.size))
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        arrays.append(np.asarray(image, dtype=np.uint8))
        scales.append(scale)
    found = _run_mtcnn(arrays)
    out = []
    for image, scale, faces in zip(images, scales, found):
        back = []
        for face in faces:
            x0, y0, x1, y1 = (float(v) / scale for v in face["box"])
            points = {k: [float(v[0]) / scale, float(v[1]) / scale] for k, v in face["keypoints"].items()}
            back.append({"box": [x0, y0, x1, y1], "confidence": float(face["confidence"]), "keypoints": points})
        out.append({"size": [image.width, image.height], "faces": back})
    return out


def _run_mtcnn(arrays: list[np.ndarray]) -> list[list[dict]]:
    """MTCNN's faces per image. Images of one shape share a call, up to MAX_BATCH_PIXELS: a call pays
    TensorFlow's per-operation cost once for its whole batch at every pyramid scale, so 16 photos of 200x200
    take ~12 ms each against ~58 ms one by one (one TF thread here), with the same boxes. Unequal shapes
    never share one: MTCNN pads a batch to its largest image, which moves its scale pyramid."""
    out: list[list[dict]] = [[] for _ in arrays]
    groups: dict[tuple, list[int]] = {}
    for i, array in enumerate(arrays):
        groups.setdefault(array.shape, []).append(i)
    for shape, members in groups.items():
        if min(shape[:2]) < 24:   # below PNet's 12 px input at min_face_size 20: no face can be found
            continue
        per_call = max(1, MAX_BATCH_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(members), per_call):
            batch = members[start:start + per_call]
            result = detector().detect_faces([arrays[i] for i in batch], box_format="xyxy", output_type="json")
            if len(result) < len(batch):  # MTCNN returns [] for a batch where nothing was found
                result = [[] for _ in batch]
            for i, found in zip(batch, result):
                out[i] = list(found)
    return out


def choose_face(detection: dict) -> dict:
    """The subject's face from `detect`'s result for one image (the rule in the module docstring);
    NoFace / SeveralFaces otherwise. The face carries `faces`: how many confident faces were found."""
    faces = confident(detection)
    if not faces:
        raise NoFace(f"no face found (confidence >= {MIN_CONFIDENCE})")
    subject = faces[0]
    if len(faces) > 1 and area(faces[0]) < SUBJECT_AREA_RATIO * area(faces[1]):
        centred = [f for f in faces if _holds(f, detection["size"])]
        if len(centred) != 1 or SUBJECT_AREA_RATIO * area(centred[0]) < area(faces[0]):
            raise SeveralFaces(f"{len(faces)} faces of similar size, {len(centred)} of them over the photo's "
                               f"centre: whose face it is is unclear")
        subject = centred[0]
    return {**subject, FACES: len(faces)}


def confident(detection: dict) -> list[dict]:
    """A detection's faces of at least MIN_CONFIDENCE, largest first: the faces the subject rule weighs."""
    return sorted((f for f in detection["faces"] if f["confidence"] >= MIN_CONFIDENCE), key=area, reverse=True)


def _holds(face: dict, size) -> bool:
    """Whether the face's box holds the centre of a photo of `size` (width, height)."""
    x0, y0, x1, y1 = face["box"]
    return x0 <= size[0] / 2 <= x1 and y0 <= size[1] / 2 <= y1


def detection_cache() -> Path:
    """Where detections are kept, by the photo's sha1: one folder per detector setting that changes them."""
    return cache_root() / "detections" / f"{DETECTOR}-{MAX_SIDE}"


def cached_detection(cache_dir: Path, sha1: str) -> dict | None:
    try:
        return json.loads(by_content(cache_dir, sha1, ".json").read_text())
    except (OSError, ValueError):
        return None


def store_detection(cache_dir: Path, sha1: str, detection: dict) -> None:
    write_atomic(by_content(cache_dir, sha1, ".json"), json.dumps(detection))


def detect_each(images: list[Image.Image]) -> list[dict]:
    """`detect` with each photo's failure kept to itself: a batch MTCNN fails on is retried photo by photo,
    and a photo it still fails on gets {"error": ...} instead of faces, so one odd photo stops neither a data
    set nor a request."""
    if not images:
        return []
    try:
        return detect(images)
    except Exception as exc:  # noqa: BLE001 - MTCNN's own errors on an odd photo must not fail the others
        if len(images) > 1:
            return [found for image in images for found in detect_each([image])]
        return [{"error": f"detector failed on this photo ({type(exc).__name__}: {exc})"}]


PROGRESS_CHUNK = 64   # photos detected between two updates of the progress bar (MTCNN batches within it)


def detect_photos(images: list[Image.Image], digests: list[str], cache_dir: Path | None = None,
                  progress: str = "") -> list[dict]:
    """`detect_each`'s result for each photo, from the cache by its content's sha1 (`digests`), else found
    by MTCNN and stored (a failure, {"error": ...}, is not stored). `progress`: a bar with this label on
    stderr while uncached photos are detected (a first run on thousands of photos takes minutes)."""
    cache_dir = cache_dir or detection_cache()
    found: dict[str, dict] = {}
    todo: dict[str, Image.Image] = {}
    for image, sha1 in zip(images, digests):
        hit = found.get(sha1) or cached_detection(cache_dir, sha1)
        if hit is not None:
            found[sha1] = {**hit, "cached": True}
        else:
            todo[sha1] = image
    from tqdm import tqdm

    pending = list(todo.items())
    with tqdm(total=len(pending), desc=progress, unit="photo", disable=not progress or len(pending) < PROGRESS_CHUNK,
              leave=False) as bar:
        for start in range(0, len(pending), PROGRESS_CHUNK):
            chunk = pending[start:start + PROGRESS_CHUNK]
            for (sha1, _), detection in zip(chunk, detect_each([image for _, image in chunk])):
                if "error" not in detection:
                    store_detection(cache_dir, sha1, detection)
                found[sha1] = detection
            bar.update(len(chunk))
    return [found[sha1] for sha1 in digests]


def region_boxes(face: dict) -> dict[str, str]:
    """MTCNN box + keypoints -> {"face_box", "eyes_box", "mouth_box", "lips_box", "eye_left_box",
    "eye_right_box"}: "x0 y0 x1 y1" pixel strings (the lips and each eye: regions.lips_box, eye_boxes)."""
    k = {name: np.asarray(p, float) for name, p in face["keypoints"].items()}
    eyes_c = (k["left_eye"] + k["right_eye"]) / 2
    mouth_c = (k["mouth_left"] + k["mouth_right"]) / 2
    d = max(float(np.linalg.norm(k["right_eye"] - k["left_eye"])), 0.9 * float(np.linalg.norm(mouth_c - eyes_c)), 1.0)
    mouth_w = max(float(np.linalg.norm(k["mouth_right"] - k["mouth_left"])), 1.0)
    down = mouth_c - eyes_c
    down = down / np.linalg.norm(down) if np.linalg.norm(down) > 0 else np.array([0.0, 1.0])
    ew = EYES_WIDTH_D * d
    mside = max(MOUTH_SIDE_W * mouth_w, MOUTH_SIDE_D * d)
    x0, y0, x1, y1 = face["box"]
    fside = FACE_SIDE_BOX * max(x1 - x0, y1 - y0)
    return {"face_box": _box(((x0 + x1) / 2, (y0 + y1) / 2), fside, fside),
            "eyes_box": _box(eyes_c, ew, ew / EYES_ASPECT),
            "mouth_box": _box(mouth_c + MOUTH_DOWN_W * mouth_w * down, mside, mside),
            "lips_box": _text(lips_box(k["mouth_left"], k["mouth_right"])),
            **{column: _text(box) for column, box in eye_boxes(k["left_eye"], k["right_eye"]).items()}}


def find_regions(image) -> dict[str, str]:
    """A photo (path, bytes or PIL image) -> its subject's region boxes and, under FACES, how many faces
    it shows; NoFace, SeveralFaces or DataError otherwise.

    The serving path: `boxes = find_regions(image)`, then `crop_region(image, region, boxes[column])` for
    each of `regions.box_columns(region)`; `find_subjects` does it for many photos at once.
    """
    found = find_subjects([load_rgb(image)])[0]
    if isinstance(found, DataError):
        raise found
    return found


def find_subjects(images: list[Image.Image]) -> list[dict[str, str] | DataError]:
    """`find_regions` for many RGB photos, detected together (`detect_each`): per photo its boxes, or the
    DataError saying why there are none (NoFace, SeveralFaces, the detector failing on it)."""
    out: list[dict[str, str] | DataError] = []
    for detection in detect_each(images):
        try:
            if "error" in detection:
                raise DataError(f"the face {detection['error']}")
            face = choose_face(detection)
            out.append({**region_boxes(face), FACES: str(face[FACES])})
        except DataError as exc:
            out.append(exc)
    return out


def cut(image: Image.Image, region: str, boxes: dict) -> np.ndarray:
    """A whole photo's crops of `region` from its boxes (find_regions' or a manifest row's): (cuts, H, W, 3),
    one per box of `regions.box_columns(region)` (each eye), the whole photo for region `photo`."""
    if region == "photo":
        return crop_region(image, region)[None]
    cuts = [parse_box(boxes[column]) for column in box_columns(region)]
    for box in cuts:
        check_cut_size(region, box)                     # a tiny face: an error, not a guess from a blur
    return np.stack([crop_region(image, region, box) for box in cuts])


def area(face: dict) -> float:
    """A face's box area in pixels (faces are ranked by it, largest first)."""
    x0, y0, x1, y1 = face["box"]
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def _box(centre, width: float, height: float) -> str:
    cx, cy = float(centre[0]), float(centre[1])
    return _text((cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2))


def _text(values) -> str:
    values = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in values):
        raise DataError("face landmarks are not finite numbers")
    return " ".join(f"{v:.2f}" for v in values)
