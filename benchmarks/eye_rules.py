"""How a whole photo's two eyes make one answer (issue 29): the plain mean, the geometric mean (served) and
the least open eye, judged on photos the models never saw.

    .venv/bin/python benchmarks/eye_rules.py --kfold-store DIR --gates-store DIR [--k 5] [--no-write]

`--kfold-store`: the tracking store of `benchmarks/kfold.py --experiment eyes-photo --set eyes-whole`
(its k runs, oldest first, are folds 0..k-1 of faceattr.kfold.folds). `--gates-store`: the store of
`benchmarks/gates.py --experiment eyes-photo` (each registered version is judged on its held-out whole
photos, as `faceattr promote` does). Every photo is sent whole through the served model and each eye's own
score (`eyes_left`, `eyes_right`) is kept, so each rule is computed from the same answers. Reported per
rule: closed faces called closed and open faces called open over all of eyes-whole (k-fold; 95% Wilson
interval, n), and per version on the held-out photos: LFW portraits (eyes open), with glasses, per pose,
and eyes-whole's closed test faces (mean ± sd over the versions).
Reads ../shared/data in place (research-only licences: nothing is copied into the repo).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import append_results, machine, spread  # noqa: E402

# Each rule from a photo's answers: its two eye scores, and the served answer itself (the geometric mean,
# FaceattrModel.answer_photos), read rather than recomputed so the row measures what is served.
RULES = {"mean": lambda eyes: (eyes["left"] + eyes["right"]) / 2,
         "geometric mean (served)": lambda eyes: eyes["served"],
         "least open eye": lambda eyes: np.minimum(eyes["left"], eyes["right"])}


def per_eye(model_uri: str, paths: pd.Series) -> pd.DataFrame:
    """Each photo's two eye scores and its served answer through the served model (NaN where it got an
    error row)."""
    from faceattr.serving.batch import ANSWER_PREFIX, local_model, score

    scored, _ = score(local_model(model_uri), pd.DataFrame({"path": paths, "kind": "photo"}), progress=False)
    columns = {"left": "eyes_left", "right": "eyes_right", "served": "eyes"}
    return pd.DataFrame({name: pd.to_numeric(scored[ANSWER_PREFIX + column], errors="coerce").to_numpy()
                         for name, column in columns.items()}, index=paths.index)


def kfold_answers(store: Path, k: int) -> pd.DataFrame:
    import mlflow

    from faceattr import config, kfold

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    _, frame = kfold.set_folds(config.load("eyes-photo"), "eyes-whole", k)
    experiment = mlflow.get_experiment_by_name("eyes-photo")
    runs = sorted(mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list"),
                  key=lambda m: m.creation_timestamp)
    if len(runs) != k:
        raise SystemExit(f"{store}: {len(runs)} logged eyes-photo models, not the {k} folds")
    parts = [per_eye(m.model_uri, frame.loc[frame["fold"] == fold, "path"]) for fold, m in enumerate(runs)]
    return frame.join(pd.concat(parts))


def gate_answers(store: Path) -> pd.DataFrame:
    import mlflow

    from faceattr import promotion

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    parts = []
    for version in mlflow.MlflowClient().search_model_versions("name='eyes-photo'"):
        cfg = promotion.training_config(version)
        frame = promotion.held_out_photos(promotion.eval_set(cfg, [version]))
        parts.append(frame.join(per_eye(f"models:/eyes-photo/{version.version}", frame["path"]))
                     .assign(version=int(version.version)))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kfold-store", type=Path, required=True)
    parser.add_argument("--gates-store", type=Path, required=True)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from faceattr.kfold import Share

    folds = kfold_answers(args.kfold_store.resolve(), args.k).dropna(subset=["left", "right", "served"])
    held = gate_answers(args.gates_store.resolve()).dropna(subset=["left", "right", "served"])
    lines = [machine(), f"k-fold: {len(folds)} eyes-whole photos answered; held out: "
                        f"{held['version'].nunique()} versions x {len(held) // held['version'].nunique()} photos"]
    for name, rule in RULES.items():
        said_open = rule(folds) >= 0.5
        closed, open_ = folds["eyes"] < 0.5, folds["eyes"] > 0.5
        line = (f"{name}: k-fold closed called closed {Share(int((~said_open & closed).sum()), int(closed.sum()))}, "
                f"open called open {Share(int((said_open & open_).sum()), int(open_.sum()))}")
        held_open = rule(held) >= 0.5
        lfw = held["set"] == "lfw-attributes"
        groups = {"LFW open": lfw, "LFW glasses": lfw & (held["glasses"] > 0.5),
                  **{f"LFW pose {p}": lfw & (held["pose"] == p) for p in sorted(held.loc[lfw, "pose"].dropna().unique())}}
        for label, rows in groups.items():
            shares = [held_open[rows & (held["version"] == v)].mean() for v in sorted(held["version"].unique())]
            line += f"; {label} {spread(shares, '.1%')} (n={int(rows.sum()) // len(shares)})"
        closed_test = (held["set"] == "eyes-whole") & (held["eyes"] < 0.5)
        shares = [(~held_open[closed_test & (held["version"] == v)]).mean() for v in sorted(held["version"].unique())]
        line += f"; eyes-whole test closed called closed {spread(shares, '.1%')} (n={int(closed_test.sum()) // len(shares)})"
        lines.append(line)
        print(line, flush=True)
    if not args.no_write:
        append_results("Whole photos: how the two eyes make one answer", lines,
                       notes="The same per-eye answers combined three ways; the served rule is the geometric mean.")


if __name__ == "__main__":
    main()
