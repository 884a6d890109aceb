"""`faceattr` command line: thin wrappers that parse arguments and call the package.

Extra `--section.key value` arguments override any key of the experiment YAML; this is also how
`mlflow run . -e eyes -P model.dense_0=64` reaches us (MLflow passes undeclared -P values that way).
"""

from __future__ import annotations

import argparse
import sys

from faceattr import config as config_module
from faceattr.errors import FaceattrError


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """['--model.dense_0', '64', '--train.verbose=1'] -> {'model.dense_0': '64', 'train.verbose': '1'}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--"):
            raise FaceattrError(f"unexpected argument {arg!r}: overrides look like --section.key VALUE")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(extra):
            key, value = arg[2:], extra[i + 1]
            i += 2
        else:
            raise FaceattrError(f"{arg} needs a value")
        out[key.replace("-", "_") if "." not in key else key] = value
    return out


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help=f"experiment name ({', '.join(config_module.available())}) or YAML path")
    parser.add_argument("--epochs", help="most epochs to train (early stopping may end sooner)")
    parser.add_argument("--batch-size", dest="batch_size")
    parser.add_argument("--data", help="'synthetic' (default) or a manifest CSV / data set folder")
    parser.add_argument("--seed", help="training seed")


def load_config(args, extra: list[str]) -> dict:
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "data", "seed")
                 if getattr(args, k, None) not in (None, "")}
    overrides.update(parse_overrides(extra))
    return config_module.load(args.experiment, overrides)


def cmd_train(args, extra) -> int:
    from faceattr.experiment import train

    outcome = train(load_config(args, extra))
    shown = {k: round(v, 4) for k, v in outcome.metrics.items()
             if k in ("val_mse", "baseline_ratio", "val_accuracy", "test_mse", "test_accuracy", "collapse_std_ratio")}
    print(f"faceattr: done: {shown} collapsed={outcome.tags['collapsed']} model={outcome.model_uri}")
    return 0


def cmd_experiments(args, extra) -> int:
    for name in config_module.available():
        cfg = config_module.load(name)
        print(f"{name:12s} {cfg['task']:15s} region={cfg['region']:6s} widths={config_module.widths(cfg)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceattr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one experiment, tracked in MLflow")
    common_options(train)
    train.set_defaults(func=cmd_train)
    sub.add_parser("experiments", help="list the experiments").set_defaults(func=cmd_experiments)
    args, extra = parser.parse_known_args(argv)
    try:
        return args.func(args, extra)
    except FaceattrError as exc:
        print(f"faceattr: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
