"""The subject-face rule on LFW portraits (issue 23): how many photos are refused for showing several faces.

    .venv/bin/python benchmarks/subject_faces.py [--photos N] [--gallery PATH]

Every lfw-attributes portrait (or the first N) goes through MTCNN once (detections cached by content,
shared with `faceattr prepare` and training) and through `faces.choose_face`; the same detections are
also judged by the rule before issue 23 (the largest face only when >= 2x the next, else refused), so
the two shares come from one set of detections. LFW's portraits centre their subject, and a stranger
of similar size behind or beside them refused 5.5% of them before.
`--gallery`: a PNG of up to 12 photos where the rule chose a face other than the largest (its box
green, the others red), to see whether it chose the person the photo is of.

Prints its figures and appends them to benchmarks/RESULTS.md with the machine line.
Reads ../shared/data in place (research-only licences: nothing is copied into the repo).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import SHARED, append_results, machine  # noqa: E402


def largest_only(detection: dict, faces) -> str:
    """The rule before issue 23: ok, `no face` or `several faces`."""
    found = sorted((f for f in detection["faces"] if f["confidence"] >= faces.MIN_CONFIDENCE),
                   key=faces.area, reverse=True)
    if not found:
        return "no face"
    if len(found) > 1 and faces.area(found[0]) < faces.SUBJECT_AREA_RATIO * faces.area(found[1]):
        return "several faces"
    return "ok"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=0, help="the first N portraits (0: all)")
    parser.add_argument("--gallery", default="", help="write a PNG of photos where the centred face was chosen")
    args = parser.parse_args()
    folder = SHARED / "lfw-attributes"
    if not (folder / "labels.csv").is_file():
        print(f"{folder} is not here; nothing to benchmark")
        return 0
    import pandas as pd

    from faceattr.data import faces
    from faceattr.data.regions import load_rgb
    from faceattr.errors import DataError

    paths = [folder / p for p in pd.read_csv(folder / "labels.csv")["path"]]
    paths = paths[:args.photos] if args.photos else paths
    started = time.perf_counter()
    images, digests = [], []
    for path in paths:
        content = path.read_bytes()
        images.append(load_rgb(content))
        digests.append(hashlib.sha1(content).hexdigest())
    detections = faces.detect_photos(images, digests)
    seconds = time.perf_counter() - started
    old, new, chosen_other, counts = [], [], [], []
    for path, image, detection in zip(paths, images, detections):
        if "error" in detection:
            old.append("no face")
            new.append("no face")
            continue
        old.append(largest_only(detection, faces))
        try:
            face = faces.choose_face(detection)
            new.append("ok")
            counts.append(face[faces.FACES])
            largest = max(detection["faces"], key=faces.area)
            if face["box"] != largest["box"]:
                chosen_other.append((path, image, detection, face))
        except DataError as exc:
            new.append(exc.reason)
    n = len(paths)
    share = lambda verdicts, what: sum(v == what for v in verdicts) / n   # noqa: E731
    several = sum(c > 1 for c in counts)
    lines = [f"machine: {machine()}",
             f"{n} lfw-attributes portraits (MTCNN {faces.DETECTOR}, confidence >= {faces.MIN_CONFIDENCE}; "
             f"detection {seconds:.0f} s, {sum(d.get('cached', False) for d in detections)} from the cache)",
             f"refused for several faces: largest-only rule {share(old, 'several faces'):.2%}, "
             f"subject-face rule {share(new, 'several faces'):.2%} (goal <= 1%)",
             f"no face found: {share(new, 'no face'):.2%}; answered with several faces in the photo: {several} "
             f"({several / n:.2%}), {len(chosen_other)} of them by the face over the centre, not the largest"]
    for line in lines:
        print(line)
    if args.gallery and chosen_other:
        gallery(chosen_other[:12], args.gallery)
        print(f"gallery: {args.gallery}")
    append_results("The subject-face rule on LFW portraits (issue 23)", lines)
    return 0


def gallery(rows, out: str) -> None:
    """Photos with every confident face boxed: the chosen one green, the others red."""
    from PIL import Image, ImageDraw

    side = 250
    sheet = Image.new("RGB", (side * min(4, len(rows)), side * ((len(rows) + 3) // 4)), "white")
    for i, (path, image, detection, face) in enumerate(rows):
        tile = image.copy()
        draw = ImageDraw.Draw(tile)
        for other in detection["faces"]:
            draw.rectangle(other["box"], outline="red", width=2)
        draw.rectangle(face["box"], outline="lime", width=3)
        sheet.paste(tile.resize((side, side)), (side * (i % 4), side * (i // 4)))
    sheet.save(out)


if __name__ == "__main__":
    sys.exit(main())
