"""Judging an experiment on every photo of one of its sets by k-fold (issue 29): the set's photos are dealt
into k folds, each fold is held out of one training run, and that run's served model answers the fold's
whole photos. Every photo is then answered by a model that never saw it (nor its person, its video or a
copy of it), so a figure can rest on all of a set's photos instead of its 10% test split: eyes-whole's
592 closed faces instead of 60, where one photo moves the figure 0.2 points instead of 1.7.

A fold keeps a group whole: the photos of one person or one video (the set's `split` rule), else the
copies of one file (same content). The other sets train in every fold as usual.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from faceattr import tasks
from faceattr.data import loading, manifest
from faceattr.errors import ConfigError

GROUPED_BY = ("person", "video")   # the split rules whose column names a group (data/splits.split_names)


def group_keys(frame: pd.DataFrame, split: str | None) -> list[str]:
    """What keeps photos together: their person or video for those split rules, else their file content
    (the same face copied under two names is one group)."""
    if split in GROUPED_BY:
        return frame[split].astype(str).tolist()
    return [hashlib.sha1(Path(path).read_bytes()).hexdigest() for path in frame["path"]]


def folds(keys: list[str], k: int) -> np.ndarray:
    """Each row's fold in 0..k-1: every group in exactly one fold, the folds as even as the groups allow.
    Groups are dealt largest first, ties by the hash of their key (stable across runs and orderings),
    each to the fold holding the fewest photos so far."""
    if k < 2:
        raise ConfigError(f"k-fold needs k >= 2 folds, got {k}")
    sizes: dict[str, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    if len(sizes) < k:
        raise ConfigError(f"{len(sizes)} groups cannot fill {k} folds")
    order = sorted(sizes, key=lambda g: (-sizes[g], hashlib.sha1(g.encode()).hexdigest()))
    filled, fold_of = [0] * k, {}
    for group in order:
        fold_of[group] = min(range(k), key=lambda f: (filled[f], f))
        filled[fold_of[group]] += sizes[group]
    return np.array([fold_of[key] for key in keys])


@dataclass
class Share:
    """A share of photos with its 95% (Wilson) interval."""
    hits: int
    n: int

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    def interval(self) -> tuple[float, float]:
        found = binomtest(self.hits, self.n).proportion_ci(0.95, method="wilson")
        return found.low, found.high

    def __str__(self) -> str:
        low, high = self.interval()
        return f"{self.value:.1%} (95% interval {low:.1%}-{high:.1%}, n={self.n})"


def set_folds(config: dict, set_name: str, k: int = 5) -> tuple[int, pd.DataFrame]:
    """The set `set_name` of `config`'s data (its index in `data.sets`) and its rows, each with its absolute
    `path` and its `fold` (folds: one person, video or file's content in one fold)."""
    sets = config["data"].get("sets") or []
    names = [loading.set_name(entry) for entry in sets]
    if set_name not in names:
        raise ConfigError(f"{config['name']} trains on no set named {set_name!r} (its sets: {', '.join(names)})")
    index = names.index(set_name)
    entry = sets[index]
    if entry.get("image_region") != "photo":
        raise ConfigError(f"{set_name}: k-fold judges whole photos (image_region: photo); it holds "
                          f"{entry.get('image_region')} crops")
    frame = manifest.read_data_set(entry["source"], image_region="photo")
    frame = frame.assign(**(entry.get("labels") or {}))
    folder = Path(frame.attrs["source"]).parent
    frame["path"] = [str((folder / p).resolve()) for p in frame["path"]]
    frame["fold"] = folds(group_keys(frame, entry.get("split") or config["data"]["split"]), k)
    return index, frame


def cross_judge(config: dict, set_name: str, k: int = 5, progress=print) -> pd.DataFrame:
    """Train `config` k times, each time without one fold of the set `set_name` (set_folds), and answer that
    fold's whole photos (kind=photo) through the run's served model. Returns the set's rows with `fold`,
    `answer` (NaN: not answered) and `error`. The runs are tracked (not registered) like any other."""
    from faceattr import experiment
    from faceattr.serving.batch import ANSWER_PREFIX, local_model, score

    index, frame = set_folds(config, set_name, k)
    entry = config["data"]["sets"][index]
    task = tasks.of(config)
    frame["answer"], frame["error"] = np.nan, None
    column = ANSWER_PREFIX + task.answer_columns(task.target.column)[0][1]
    with tempfile.TemporaryDirectory(prefix="faceattr-kfold-") as tmp:
        for fold in range(k):
            kept = Path(tmp) / f"without-{fold}.csv"
            frame.loc[frame["fold"] != fold].drop(columns=["fold", "answer", "error", "row"], errors="ignore") \
                .to_csv(kept, index=False)
            trained = copy.deepcopy(config)
            trained["data"]["sets"][index] = {**entry, "source": str(kept), "name": set_name}
            progress(f"fold {fold + 1}/{k}: training without {int((frame['fold'] == fold).sum())} photos of {set_name}")
            outcome = experiment.train(trained, register=False)
            held = frame.index[frame["fold"] == fold]
            scored, _ = score(local_model(outcome.model_uri),
                              pd.DataFrame({"path": frame.loc[held, "path"], "kind": "photo"}), progress=False)
            frame.loc[held, "answer"] = pd.to_numeric(scored[column], errors="coerce").to_numpy()
            frame.loc[held, "error"] = scored["error"].to_numpy()
    return frame
