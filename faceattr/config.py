"""Experiment configuration: load `experiments/<name>.yaml`, merge defaults, apply overrides, validate.

A config is a plain nested dict. Every problem raises `ConfigError` naming the key at fault.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from faceattr.errors import ConfigError

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
REGIONS = ("photo", "face", "eyes", "mouth")
TARGETS = {"regression": ("background", "eyes", "mouth"), "classification": ("gender",),
           "identity": ("person",)}  # identity: "is this person X?" (binary), models/transfer.py

# The seeds' training schedule; an experiment YAML overrides any of it. `min_delta`: a smaller drop
# of val_loss is no improvement (without it, 1e-6-sized gains at the floor LR keep runs going to the end).
DEFAULTS: dict[str, Any] = {
    # persons: how many people the synthetic photos show (None: the generator's default)
    "data": {"source": "synthetic", "size": 2000, "seed": 0, "rounded": True, "persons": None,
             "image_region": None, "folders": None, "gender": "auto",
             "split": "auto"},  # auto | person | phash | content: see data/loading.split_names
    "model": {"dropout": 0.25},
    "train": {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3, "seed": 0,
              "lr_factor": 0.1, "lr_patience": 3, "min_lr": 1e-6,
              "early_stopping_patience": 6, "min_delta": 1e-4, "verbose": 2,
              "augment": False},  # random flip/shift/brightness on the training split (pipeline.to_tf_dataset)
    # collapse: the model's predictions on validation have less than this share of the labels' spread
    "evaluation": {"collapse_threshold": 0.25, "first_outputs": 15},
    "search": {},
}

# `-P name=value` shortcuts shared by every entry point.
SHORTCUTS = {"epochs": "train.epochs", "batch_size": "train.batch_size", "seed": "train.seed",
             "learning_rate": "train.learning_rate", "data": "data.source",
             # identity only (validate refuses them elsewhere)
             "person": "data.person", "backbone": "model.backbone", "weights": "model.weights"}


def available() -> list[str]:
    """Names of the experiments shipped in `experiments/`."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load(name_or_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load an experiment by name (or YAML path), apply `overrides` ({"epochs": 3, "model.dense_0": 64}), validate."""
    path = Path(name_or_path)
    if not path.suffix:
        path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown experiment {name_or_path!r}: no file {path}. "
                          f"Available: {', '.join(available())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    config = _merge(copy.deepcopy(DEFAULTS), raw)
    for key, value in (overrides or {}).items():
        set_key(config, SHORTCUTS.get(key, key), value)
    return validate(config, source=str(path))


def set_key(config: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in place; strings are parsed as YAML scalars ("3" -> 3, "true" -> True)."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            pass
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown parameter {dotted!r}: {part!r} is not a section")
        node = node[part]
    if leaf not in node and dotted not in SHORTCUTS.values():
        known = ", ".join(sorted(SHORTCUTS) + sorted(f"{'.'.join(parents + [k])}" for k in node))
        raise ConfigError(f"unknown parameter {dotted!r}; known here: {known}")
    node[leaf] = value


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check types and ranges; return the config or raise ConfigError naming the key."""
    def fail(key: str, why: str):
        raise ConfigError(f"{source}: {key}: {why}")

    for key in ("name", "task", "target", "region", "model"):
        if key not in config:
            fail(key, "missing")
    task, target, region = config["task"], config["target"], config["region"]
    if task not in TARGETS:
        fail("task", f"{task!r} is not one of {', '.join(TARGETS)}")
    if target not in TARGETS[task]:
        fail("target", f"{target!r} is not a {task} target ({', '.join(TARGETS[task])})")
    if region not in REGIONS:
        fail("region", f"{region!r} is not one of {', '.join(REGIONS)}")

    train = config["train"]
    for key in ("epochs", "batch_size", "lr_patience", "early_stopping_patience"):
        if not isinstance(train.get(key), int) or isinstance(train[key], bool) or train[key] < 1:
            fail(f"train.{key}", f"must be a positive integer, got {train.get(key)!r}")
    if not isinstance(train.get("seed"), int):
        fail("train.seed", f"must be an integer, got {train.get('seed')!r}")
    if not _number(train.get("learning_rate")) or not 0 < train["learning_rate"] < 1:
        fail("train.learning_rate", f"must be a number in (0, 1), got {train.get('learning_rate')!r}")

    model = config["model"]
    if task == "identity":
        from faceattr.models.transfer import validate_identity

        validate_identity(config, fail)
    else:
        if "person" in config["data"]:
            fail("data.person", "only the identity experiment takes a target person")
        for key in ("backbone", "weights"):
            if key in model:
                fail(f"model.{key}", "only the identity experiment has a backbone (models/transfer.py)")
        _validate_cnn(model, task, fail)

    data = config["data"]
    if not isinstance(data.get("source"), str) or not data["source"]:
        fail("data.source", f"must be 'synthetic' or a path to a manifest CSV or folder, got {data.get('source')!r}")
    if not isinstance(data.get("size"), int) or data["size"] < 10 or data["size"] % 2:
        fail("data.size", f"must be an even integer >= 10, got {data.get('size')!r}")
    if data.get("gender") not in ("auto", "model", "labels", "unknown"):
        fail("data.gender", f"must be auto, model, labels or unknown, got {data.get('gender')!r}")
    if data.get("split") not in ("auto", "person", "phash", "content"):
        fail("data.split", f"must be auto, person, phash or content, got {data.get('split')!r}")
    if isinstance(train.get("augment", False), dict):
        from faceattr.data.pipeline import check_augment

        check_augment(train["augment"], fail)
    elif not isinstance(train.get("augment", False), bool):
        fail("train.augment", f"must be true, false or a mapping of switches (flip, brightness, contrast, "
                              f"hue, saturation, noise), got {train.get('augment')!r}")
    if data.get("image_region") not in (None, *REGIONS):
        fail("data.image_region", f"must be one of {', '.join(REGIONS)}, got {data.get('image_region')!r}")
    threshold = config["evaluation"].get("collapse_threshold")
    if not _number(threshold) or not 0 < threshold < 1:
        fail("evaluation.collapse_threshold", f"must be a number in (0, 1), got {threshold!r}")
    return config


def _validate_cnn(model: dict, task: str, fail) -> None:
    conv = model.get("conv")
    if not isinstance(conv, list) or not conv:
        fail("model.conv", "must be a non-empty list of {filters, padding, pool}")
    for i, layer in enumerate(conv):
        if not isinstance(layer, dict) or not isinstance(layer.get("filters"), int) or layer["filters"] < 1:
            fail(f"model.conv.{i}.filters", f"must be a positive integer, got {layer!r}")
        if layer.get("padding", "valid") not in ("same", "valid"):
            fail(f"model.conv.{i}.padding", f"must be 'same' or 'valid', got {layer.get('padding')!r}")
        if not isinstance(layer.get("pool", False), bool):
            fail(f"model.conv.{i}.pool", f"must be true or false, got {layer.get('pool')!r}")
    dense_keys = ("dense_0", "dense_1") if task == "regression" else ("dense_0",)
    for key in dense_keys:
        if not isinstance(model.get(key), int) or model[key] < 1:
            fail(f"model.{key}", f"must be a positive integer, got {model.get(key)!r}")
    if not _number(model.get("dropout")) or not 0 <= model["dropout"] < 1:
        fail("model.dropout", f"must be a number in [0, 1), got {model.get('dropout')!r}")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"conv": [{"filters": 32}]}} -> {"model.conv.0.filters": 32}: one MLflow param per leaf."""
    flat: dict[str, Any] = {}
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def widths(config: dict[str, Any]) -> str:
    """The architecture in one short string, e.g. '32-48-64-96-128/320/120'."""
    model = config["model"]
    if config.get("task") == "identity":  # e.g. 'mobilenetv2-96-none'
        from faceattr.models.transfer import describe

        return describe(model)
    dense = [str(model[k]) for k in ("dense_0", "dense_1") if k in model]
    return "/".join(["-".join(str(layer["filters"]) for layer in model["conv"]), *dense])


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
