"""Whole photos served to models trained on close-up crops (issue 16): the same 300 UTKFace portraits
(all with open eyes, nearly all with closed or smiling mouths) scored with `kind=photo` through the
served code (FaceattrModel.read + answer_photos, what `faceattr predict --kind photo` runs).

    .venv/bin/python benchmarks/whole_photos.py [--photos 300] [--epochs 40] [--cases eyes,eye,mouth]

Cases (each trained afresh on its real set; the held-out `test` split's accuracy is printed beside):
- `eyes`:  eye-state's single-eye close-ups declared as the two-eye band (`data.image_region=eyes`), the
  setting of the issue. Such a model now refuses whole photos; its answers are shown as it gave them
  before the refusal existed (the crop record dropped), to measure the skew;
- `eye`:   the same photos as region `eye` (one eye): whole photos are scored per eye;
- `eye-downscale`: the same, trained with `train.augment: {flip: true, downscale: 0.35}` (an eye cut
  from a 200 px portrait is blurred next to a sharp close-up);
- `mouth`: yawn-mouth's crops as region `mouth` (refused on whole photos too; shown as before);
- `lips`:  the same crops as region `lips` (the lips alone, as yawn-mouth shows them).

Prints its figures and appends them, with the machine and the exact command, to benchmarks/RESULTS.md.
Reads ../shared/data in place (research-only licences: nothing is copied into the repo).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import SHARED, append_results, machine  # noqa: E402

CASES = {   # name: (experiment, data set, region, other overrides)
    "eyes": ("eyes", "eye-state", "eyes", {}),
    "eye": ("eyes", "eye-state", "eye", {}),
    "eye-downscale": ("eyes", "eye-state", "eye", {"train.augment": "{flip: true, downscale: 0.35}"}),
    "mouth": ("mouth", "yawn-mouth", "mouth", {}),
    "lips": ("mouth", "yawn-mouth", "lips", {}),
}


def run_case(name: str, photos, epochs: int) -> str:
    from faceattr import config as config_module
    from faceattr import experiment, serving
    from faceattr.serving.batch import ANSWER_PREFIX, score

    exp, data, region, extra = CASES[name]
    cfg = config_module.load(exp, {"data": str(SHARED / data), "region": region, "data.image_region": region,
                                   "epochs": epochs, "train.verbose": "0", **extra})
    outcome = experiment.train(cfg, register=False)
    served = serving.load(outcome.model_uri)
    refusal = served.record.photo_refusal()
    if refusal:   # measure what it would answer: as models answered before the crop record existed
        served.record = served.record.model_copy(update={"crops": None})
    scored, _ = score(served, photos, progress=False)
    ok = scored[scored["error"] == ""].rename(columns=lambda c: c.removeprefix(ANSWER_PREFIX))
    values = ok[exp].astype(float)
    side = "open" if exp == "eyes" else "yawning"
    share = (values >= 0.5).mean()
    extra = ""
    if f"{exp}_left" in ok:
        both = ((ok[f"{exp}_left"].astype(float) >= 0.5) & (ok[f"{exp}_right"].astype(float) >= 0.5)).mean()
        extra = f", both eyes open {both:.1%}"
    wrong = ok.sort_values(exp, ascending=exp == "eyes").head(8)   # the surest wrong answers, to look at
    print(f"{name}: the 8 photos it is surest are {'closed' if exp == 'eyes' else 'yawning'}: "
          + ", ".join(f"{Path(p).name} {v:.2f}" for p, v in zip(wrong["path"], wrong[exp].astype(float))))
    return (f"{name:13s} {exp} trained on {data} as region {region} ({outcome.metrics['epochs_trained']:.0f} epochs): "
            f"held-out test accuracy {outcome.metrics['test_accuracy_at_0_5']:.4f}; "
            f"{len(photos)} UTKFace photos: {len(ok)} scored, called {side} {share:.1%} (median {values.median():.3f}"
            f"{extra}); whole photos {'REFUSED (answers above: as before the refusal)' if refusal else 'served'}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=300, help="the first N photos of utkface-gender")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    if not (SHARED / "eye-state" / "labels.csv").is_file():
        print(f"{SHARED} is not here; nothing to benchmark")
        return 0
    import pandas as pd

    from faceattr import tracking

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    tracking.use_experiment("whole-photos")
    labels = pd.read_csv(SHARED / "utkface-gender" / "labels.csv").head(args.photos)
    photos = pd.DataFrame({"path": [str(SHARED / "utkface-gender" / p) for p in labels["path"]], "kind": "photo"})
    lines = [f"machine: {machine()}"]
    for name in args.cases.split(","):
        lines.append(run_case(name.strip(), photos, args.epochs))
        print(lines[-1], flush=True)
    append_results("Whole photos served to models trained on close-up crops (issue 16)", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
