"""Whole portraits (issue 23): the models meant to serve whole photos beside today's close-up models and the
landmark baselines, on held-out shared whole faces, with slices; and gender rows for the dlib-resnet model.

    .venv/bin/python benchmarks/whole_photos.py [--epochs 15] [--cases eyes,mouth,gender] [--gallery DIR]
                                                [--gender-photos N]

Held-out whole faces: the `test` split of `eyes-whole` (by content hash) and `lfw-attributes` (by person)
as the `eyes-photo` experiment deals them: photos no training run here saw. Every photo is sent whole
(`kind=photo`) through the served model (FaceattrModel.read + answer_photos, what `faceattr predict
--kind photo` runs); a photo the model cannot answer (no face, no clear subject) counts as not right.

- eyes: `eyes-photo` (close-ups + whole faces, experiments/eyes-photo.yaml) beside today's close-up model
  (region `eye` trained on eye-state alone) and the eye aspect ratio (dlib's 68 landmarks, no training;
  its threshold chosen on the eyes-photo run's validation split);
- mouth: `mouth-photo` beside the close-up model (region `lips` on yawn-mouth) and the inner-lip mouth
  aspect ratio, on the LFW portraits (nobody yawns in them);
- gender (`dlib-resnet`: a head on dlib's face descriptor): trained on utkface-gender and judged on
  lfw-attributes' held-out people (other people, other cameras); trained on both sets at once and judged
  on each held-out part (the run's per-set test slices). `--gender-photos`: use only the first N
  lfw-attributes photos (descriptors cost ~0.1 s each here).

Goals (issue 23): closed eyes called closed >= 95%; open eyes called open >= 97% (UTKFace faces, LFW
portraits; glasses and turned heads >= 95%); LFW called yawning <= 3% (smiling <= 5%); gender >= 97.5%.
`--gallery DIR`: PNGs of each new model's surest mistakes on the held-out photos, to look at.

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

TURNED = ("left", "right", "left-profile", "right-profile")


def trained(name: str, overrides: dict, epochs: int):
    """(config, outcome, served model) of one run of experiment `name` (not registered)."""
    from faceattr import config, experiment, serving

    cfg = config.load(name, {"epochs": epochs, "train.verbose": 0, **overrides})
    outcome = experiment.train(cfg, register=False)
    return cfg, outcome, serving.load(outcome.model_uri)


def held_out(cfg: dict):
    """The whole photos in the test split of `cfg`'s sets: one row a photo, with its set and labels."""
    from faceattr import tasks
    from faceattr.data.loading import open_data

    frame = open_data(cfg, tasks.of(cfg)).frame
    frame = frame[(frame["split"] == "test") & (frame["image_region"] == "photo")]
    return frame.drop_duplicates("path").drop(columns=["cut"], errors="ignore").reset_index(drop=True)


def scored(served, photos, column: str):
    """Each photo's answer through the served model (NaN where it refused the photo)."""
    import pandas as pd

    from faceattr.serving.batch import ANSWER_PREFIX, score

    out, _ = score(served, pd.DataFrame({"path": photos["path"], "kind": "photo"}), progress=False)
    return pd.to_numeric(out[ANSWER_PREFIX + column].where(out["error"].isna()), errors="coerce").to_numpy(float)


def share_row(label: str, groups: dict, answers: dict, wanted_open: bool) -> str:
    """`label`: for each model, the share of each group's photos called open (or yawning) as wanted."""
    import numpy as np

    cells = []
    for group, rows in groups.items():
        if not rows.any():
            continue
        parts = []
        for model, values in answers.items():
            said = values[rows]
            right = (said >= 0.5) == wanted_open if wanted_open is not None else said >= 0.5
            right = np.where(np.isnan(said), False, right)
            parts.append(f"{model} {right.mean():.1%}")
        cells.append(f"{group} (n={int(rows.sum())}): " + ", ".join(parts))
    return f"{label}: " + "; ".join(cells)


def contenders(target: str, close_ups: str, region: str, ratio: str, epochs: int):
    """The photo model (`<target>-photo`), today's close-up model (`target` trained on the `close_ups` set as
    region `region`) and the landmark baseline named `ratio`, each answering the photo model's held-out
    whole photos: (the photos, {contender: answers}, a line describing the three)."""
    import numpy as np

    from faceattr.features.landmarks import aspect_ratios

    cfg, new, served_new = trained(f"{target}-photo", {}, epochs)
    _, old, served_old = trained(target, {"data": str(SHARED / close_ups), "region": region,
                                          "data.image_region": region}, epochs)
    photos = held_out(cfg)
    threshold = new.metrics["landmark_baseline_threshold"]
    values = aspect_ratios(photos, target)
    answers = {f"{target}-photo": scored(served_new, photos, target), "close-up": scored(served_old, photos, target),
               ratio: np.where(np.isnan(values), np.nan, (values >= threshold) * 1.0)}
    line = (f"{target}-photo: {new.metrics['epochs_trained']:.0f} epochs, test accuracy "
            f"{new.metrics['test_accuracy_at_0_5']:.4f}; close-up ({region} on {close_ups}): "
            f"{old.metrics['epochs_trained']:.0f} epochs, test accuracy {old.metrics['test_accuracy_at_0_5']:.4f}; "
            f"{ratio} threshold {threshold:.3f} (chosen on validation)")
    return photos, answers, line


def eyes(epochs: int, gallery: str) -> list[str]:
    photos, answers, line = contenders("eyes", "eye-state", "eye", "EAR", epochs)
    whole, lfw = photos["set"] == "eyes-whole", photos["set"] == "lfw-attributes"
    closed, opened = whole & (photos["eyes"] < 0.5), photos["eyes"] >= 0.5
    lines = [line,
             share_row("closed eyes called closed", {"eyes-whole closed (CEW)": closed.to_numpy()}, answers, False),
             share_row("open eyes called open", {
                 "eyes-whole open (UTKFace)": (whole & opened).to_numpy(), "LFW": lfw.to_numpy(),
                 "LFW glasses": (lfw & (photos.get("glasses") == 1)).to_numpy(),
                 "LFW turned head": (lfw & photos.get("pose").isin(TURNED)).to_numpy(),
                 "LFW smiling": (lfw & (photos.get("smiling") == 1)).to_numpy()}, answers, True)]
    if gallery:
        lines.append(mistakes(photos, answers["eyes-photo"], "eyes", Path(gallery) / "eyes-photo-mistakes.png"))
    return lines


def mouth(epochs: int, gallery: str) -> list[str]:
    photos, answers, line = contenders("mouth", "yawn-mouth", "lips", "MAR", epochs)
    lfw = (photos["set"] == "lfw-attributes").to_numpy()
    lines = [line,
             share_row("LFW portraits called yawning (refused photos count as not answered)",
                       {"LFW": lfw, "LFW smiling": lfw & (photos["smiling"] == 1).to_numpy(),
                        "LFW turned head": lfw & photos["pose"].isin(TURNED).to_numpy()}, answers, None)]
    if gallery:
        lines.append(mistakes(photos, answers["mouth-photo"], "mouth", Path(gallery) / "mouth-photo-mistakes.png"))
    return lines


def mistakes(photos, values, target: str, out: Path) -> str:
    """A gallery of the held-out photos the model is surest wrong about."""
    import numpy as np
    from PIL import Image

    from faceattr import plots

    error = np.abs(np.nan_to_num(values, nan=0.5) - photos[target].to_numpy(float))
    worst = np.argsort(-error)[:16]
    images = [np.asarray(Image.open(photos["path"][i]).convert("RGB").resize((120, 120))) for i in worst]
    captions = [f"{photos['set'][i][:10]} true {photos[target][i]:.0f}\nsaid {values[i]:.2f}" for i in worst]
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.error_gallery(images, captions, f"{target}: the held-out whole faces it is surest wrong about").savefig(out)
    return f"gallery: {out}"


def gender(epochs: int, photos_n: int) -> list[str]:
    import numpy as np
    import pandas as pd

    from faceattr import config

    lfw_csv = pd.read_csv(SHARED / "lfw-attributes" / "labels.csv")
    size = photos_n or len(lfw_csv)
    _, alone, served = trained("gender", {"data": str(SHARED / "utkface-gender"), "data.image_region": "face",
                                          "backbone": "dlib-resnet"}, epochs)
    both_cfg = config.load("gender", {"backbone": "dlib-resnet", "epochs": epochs, "train.verbose": 0})
    both_cfg["data"]["sets"] = [
        {**config.DataSet(source=str(SHARED / "utkface-gender"), image_region="face").model_dump()},
        {**config.DataSet(source=str(SHARED / "lfw-attributes"), image_region="photo", split="person",
                          size=photos_n or None).model_dump()}]
    cfg = config.validate(both_cfg)
    lfw_test = held_out(cfg)
    lfw_test = lfw_test[lfw_test["set"] == "lfw-attributes"]
    said = scored(served, lfw_test, "p_female")
    right = np.where(np.isnan(said), False, (said >= 0.5) == (lfw_test["gender"] == "female").to_numpy())
    from faceattr import experiment

    both = experiment.train(cfg, register=False).metrics
    return [f"gender (dlib-resnet) trained on utkface-gender: its test split {alone.metrics['test_accuracy']:.2%}; "
            f"LFW held-out people (n={len(lfw_test)}, of {size} photos read): {right.mean():.2%} "
            f"({np.isnan(said).sum()} not answered)",
            "gender (dlib-resnet) trained on utkface-gender + lfw-attributes at once: test "
            + ", ".join(f"{name} {both.get(f'test_accuracy.slice.set.{name}', float('nan')):.2%} "
                        f"(n={both.get(f'test_photos.slice.set.{name}', 0):.0f})"
                        for name in ("utkface-gender", "lfw-attributes"))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cases", default="eyes,mouth,gender")
    parser.add_argument("--gallery", default="", help="a folder for the mistake galleries (PNG)")
    parser.add_argument("--gender-photos", type=int, default=0, help="the first N lfw-attributes photos (0: all)")
    args = parser.parse_args()
    if not (SHARED / "lfw-attributes" / "labels.csv").is_file():
        print(f"{SHARED} is not here; nothing to benchmark")
        return 0
    from faceattr import tracking

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    tracking.use_experiment("whole-portraits")
    lines = [f"machine: {machine()}", f"{args.epochs} epochs at most (early stopping)"]
    cases = {"eyes": lambda: eyes(args.epochs, args.gallery), "mouth": lambda: mouth(args.epochs, args.gallery),
             "gender": lambda: gender(args.epochs, args.gender_photos)}
    for name in args.cases.split(","):
        for line in cases[name.strip()]():
            lines.append(line)
            print(line, flush=True)
    append_results("Whole portraits: photo models, close-up models, landmark baselines (issue 23)", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
