"""Keras models (pure Keras 3, so they run under any backend), one module per backbone.

A backbone module declares itself: `NAMES` (the `model.backbone` values it builds), `Schema` (its
`model:` section, defaults included; faceattr/config.py checks an experiment's against it), `READS` (its
input kind, models/inputs.py), `SWITCH_DEFAULTS` (what `-P model.backbone=` starts from when it switches
an experiment of another backbone to it), `build(model, region, name, task)`, `describe(model)` (the
widths in one short string, for run names) and `declare(hp, model, search)` / `apply(model, values)`
(what `faceattr tune` may vary). The task gives the output layer (faceattr/tasks.py); the experiment's
`model.backbone` picks the backbone (default: the task's first). A new backbone is one module here and
its name in MODULES. Keras is imported when a model is built, not when a config is read.
"""

from __future__ import annotations

import copy

from faceattr import tasks
from faceattr.models import cnn, face_head, hog_head, transfer

MODULES = (cnn, transfer, face_head, hog_head)
BACKBONES = {name: module for module in MODULES for name in module.NAMES}


def backbone_of(config: dict):
    return BACKBONES[config["model"]["backbone"]]


def input_kind(config: dict):
    """What the model takes (faceattr/models/inputs.py): the backbone's `READS`, else the region's crop."""
    return backbone_input(config["model"]["backbone"])


def backbone_input(backbone: str):
    """What a model with this backbone takes (see `input_kind`)."""
    return BACKBONES[backbone].READS


def build(config: dict):
    """The model an experiment config describes (the task finishes it for its declared target's range)."""
    task = tasks.of(config)
    return task.finish(backbone_of(config).build(config["model"], config["region"], config["name"], task))


def widths(config: dict) -> str:
    """The architecture in one short string, e.g. '32-48-64-96-128/320/120' or 'mobilenetv2-96-none'."""
    return backbone_of(config).describe(config["model"])


def declare(hp, config: dict) -> None:
    """Declare the hyperparameters the experiment's `search:` section names (absent keys stay fixed)."""
    search = config["search"]
    backbone_of(config).declare(hp, config["model"], search)
    if search["dropout"]:
        hp.Float("dropout", *search["dropout"])
    if search["learning_rate"]:
        hp.Float("learning_rate", *search["learning_rate"], sampling="log")


def apply(config: dict, values: dict) -> dict:
    """A copy of `config` with hyperparameter `values` (hp values or best.* params) put in place."""
    out = copy.deepcopy(config)
    backbone_of(out).apply(out["model"], values)
    if "dropout" in values:
        out["model"]["dropout"] = float(values["dropout"])
    if "learning_rate" in values:
        out["train"]["learning_rate"] = float(values["learning_rate"])
    return out
