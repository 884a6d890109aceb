"""Every whole photo of one set judged by a model that never saw it (issue 29): faceattr.kfold.cross_judge.

    .venv/bin/python benchmarks/kfold.py [--experiment eyes-photo] [--set eyes-whole] [--k 5] [--seeds 0]
                                         [--set-param KEY=VALUE ...] [--no-write]

For each seed, the experiment is trained k times (the set's fold held out of each run, the other sets
whole) and each fold's photos are sent whole (`kind=photo`) through that run's served model. Reported
per label side (and over either side: the accuracy): the share answered on the label's side of 0.5
among the answered photos, with its 95% Wilson interval and n, and how many photos got an error row (no
face, a face too small, ...). For eyes-photo on eyes-whole the low side is "closed eyes called closed";
for mouth-photo on yawn-whole the high side is "yawns caught", the low side one minus the false alarms.
Reads ../shared/data in place (research-only licences: nothing is copied into the repo).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import append_results, machine, spread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="eyes-photo")
    parser.add_argument("--set", dest="set_name", default="eyes-whole")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--set-param", action="append", default=[], help="KEY=VALUE override for every run")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from faceattr import config, kfold, tasks

    lines, by_side = [machine()], {}
    for seed in map(int, args.seeds.split(",")):
        overrides = {"train.seed": seed, "train.verbose": 0, **dict(p.split("=", 1) for p in args.set_param)}
        cfg = config.load(args.experiment, overrides)
        target = tasks.of(cfg).target
        middle = target.middle
        judged = kfold.cross_judge(cfg, args.set_name, args.k)
        answered = judged["answer"].notna()
        line = f"seed {seed}: {len(judged)} photos in {args.k} folds, {int((~answered).sum())} not answered"
        high = judged[target.column] > middle
        for side, rows, sign in (("low", judged[target.column] < middle, "<"), ("high", high, ">"),
                                 ("either", judged[target.column] != middle, "!=")):   # either: the accuracy
            right = (judged["answer"] >= middle) == high
            share = kfold.Share(int((right & answered & rows).sum()), int((answered & rows).sum()))
            by_side.setdefault(side, []).append(share.value)
            line += f"; label {side} ({sign} {middle:g}) on its side: {share}"
        reasons = judged.loc[~answered, "error"].str.split(":").str[0].value_counts().to_dict()
        lines.append(line + (f"; errors: {reasons}" if reasons else ""))
        print(lines[-1], flush=True)
    for side, values in by_side.items():
        lines.append(f"label {side}: {spread(values, '.1%')} over {len(values)} seed(s)")
    print("\n".join(lines))
    if not args.no_write:
        append_results(f"k-fold: {args.experiment} on every photo of {args.set_name} (issue 29)", lines)


if __name__ == "__main__":
    main()
