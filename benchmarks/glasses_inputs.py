"""What reads glasses: dlib's descriptor, the HOG of the eye band at several cuts, and both, by 5-fold
cross-validation of a logistic regression over every LFW portrait with a face (how features/hog.py and
models/hog_head.py were chosen).

    .venv/bin/python benchmarks/glasses_inputs.py [--folds 5] [--repeats 2]

The photos, their eye-band boxes and split are `faceattr train glasses`'s (experiments/glasses.yaml: MTCNN
landmarks, cached by content); the descriptors are the dlib-resnet backbone's (cached). Each feature set is
standardised and fitted by scikit-learn's LogisticRegression (C=0.01), folds stratified by label and
repeated with other shuffles; one photo per person, so a fold's photos are people no fold-mate saw.
Accuracy is the mean over repeats, with the spread between them. The test split's people are among the
folds: this chose the inputs, the test split and benchmarks/attributes.py judge the shipped model.
Appends the figures to benchmarks/RESULTS.md. Reads ../shared/data in place.
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

CUTS = [((32, 60), 4), ((32, 60), 5), ((48, 90), 6), ((48, 90), 8), ((64, 120), 8), ((64, 120), 10)]   # (H, W), cell px


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from faceattr import config, experiment, tasks
    from faceattr.data.regions import load_rgb, parse_box
    from faceattr.features import face_descriptor, hog

    cfg = config.load("glasses", {})
    data, descriptors, _ = face_descriptor.describe_data(experiment.open_data(cfg, tasks.of(cfg)), progress=False)
    frame = data.frame
    labels = frame["glasses"].to_numpy().astype(int)
    grids = {cut: [] for cut in CUTS}   # each photo decoded once, cut at every size
    for path, box in zip(frame["path"], frame["eyes_box"]):
        photo = load_rgb(path)
        for size, cell in CUTS:
            grids[size, cell].append(hog.of_cut(photo, "eyes", parse_box(box), cut=size, cell=cell))

    def accuracy(features) -> str:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=5000))
        found = [cross_val_score(model, features, labels, cv=StratifiedKFold(args.folds, shuffle=True, random_state=r)).mean()
                 for r in range(args.repeats)]
        sd = statistics.stdev(found) if len(found) > 1 else 0.0
        return f"{100 * statistics.mean(found):.1f}% ± {100 * sd:.1f}"

    lines = [machine(), f"{len(frame)} LFW portraits with a face ({labels.sum()} with glasses), {args.folds}-fold x "
                        f"{args.repeats} shuffles, logistic regression C=0.01 on standardised features"]
    lines.append(f"descriptor (128)                          {accuracy(descriptors)}")
    for size, cell in CUTS:
        grid = np.stack(grids[size, cell])
        name = f"eye band {size[0]}x{size[1]}, {cell}-px cells"
        lines.append(f"HOG {name:32s} ({grid.shape[1]:4d}) {accuracy(grid)}; with the descriptor "
                     f"{accuracy(np.hstack([grid, descriptors]))}")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    append_results("Glasses: what reads them (5-fold over LFW)", lines,
                   notes="The shipped cut (features/hog.py): 48x90, 8-px cells, beside the descriptor.")


if __name__ == "__main__":
    main()
