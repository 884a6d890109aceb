"""Experiment configuration: load `experiments/<name>.yaml`, merge defaults, apply overrides, validate.

A config is a plain nested dict: the schema's dump, every key present, so readers index it
(`config["train"]["augment"]`) and no default is restated where it is read. Every default lives in the
schema below (an experiment's sections) or in its backbone's module (`model:`, faceattr/models); every
problem raises `ConfigError` naming the key at fault.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from faceattr import models, tasks
from faceattr.data.regions import REGION_SIZES
from faceattr.errors import ConfigError
from faceattr.models.transfer import alpha_choice as _alpha

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
POLICY_DIR = Path(__file__).resolve().parent.parent / "registry"     # promotion policies: <model>.yaml
REGIONS = tuple(REGION_SIZES)

# `-P name=value` shortcuts shared by every entry point.
SHORTCUTS = {"epochs": "train.epochs", "batch_size": "train.batch_size", "seed": "train.seed",
             "learning_rate": "train.learning_rate", "data": "data.source",
             # identity only (validate refuses them elsewhere); backbone: any the task takes
             "person": "data.person", "backbone": "model.backbone", "weights": "model.weights"}


def _shortcuts(config: dict) -> list[str]:
    """The `-P` shortcuts that apply to this experiment (identity's target person only where it has one)."""
    task = tasks.TASKS.get(config.get("task"))
    refused = () if task is None or task.takes_person else task.identity_only_data
    return [k for k, dotted in SHORTCUTS.items() if dotted.removeprefix("data.") not in refused]


def available() -> list[str]:
    """Names of the experiments shipped in `experiments/`."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def policies() -> list[str]:
    """Names of the registered models with a promotion policy in `registry/`."""
    return sorted(p.stem for p in POLICY_DIR.glob("*.yaml"))


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
    if isinstance(raw.get("data"), list):   # `data: [set, set]`: the sets, every other data key its default
        raw["data"] = {"sets": raw["data"]}
    _resolve_sets(raw.get("data"), path.parent)
    config = _merge(defaults(raw), raw)
    given = {SHORTCUTS.get(k, k): v for k, v in (overrides or {}).items()
             if not (k in SHORTCUTS and v == "")}   # MLproject passes "" for a shortcut left at its default
    if "model.backbone" in given:
        switch_backbone(config, given.pop("model.backbone"))
    for key, value in given.items():
        set_key(config, key, value)
    return validate(config, source=str(path))


def _resolve_sets(data, folder: Path) -> None:
    """A set's relative `source` is relative to the YAML naming it (as a policy's `photos.data` is), so a
    shipped experiment finds `../../shared/data/<set>` from any working directory."""
    for entry in (data or {}).get("sets") or []:
        if isinstance(entry, dict) and isinstance(entry.get("source"), str) and not Path(entry["source"]).is_absolute():
            entry["source"] = str((folder / entry["source"]).resolve())


def defaults(raw: dict | None = None) -> dict[str, Any]:
    """Every key's default, from the schema: each section's fields, and the `model:` fields its backbone's
    schema gives a default (the backbone `raw` names, else its task's first)."""
    out = {name: field.annotation().model_dump() for name, field in Experiment.model_fields.items()
           if name in SECTIONS}
    out["model"] = _optional_fields(_backbone_module(raw or {}))
    return out


SECTIONS = ("data", "train", "evaluation", "search")   # the sections whose every key has a default


def _backbone_module(raw: dict):
    task = tasks.TASKS.get(raw.get("task"))
    name = (raw.get("model") or {}).get("backbone", task.backbones[0] if task else None)
    return models.BACKBONES.get(name)


def _optional_fields(module) -> dict:
    """The `model:` fields a backbone's schema gives a default (the others an experiment must name)."""
    if module is None:
        return {}
    return {name: copy.deepcopy(field.default) for name, field in module.Schema.model_fields.items()
            if not field.is_required() and name != "backbone"}


def switch_backbone(config: dict, backbone: Any) -> None:
    """`-P model.backbone=NAME`: a backbone of another module starts from its own defaults (its schema's,
    then its SWITCH_DEFAULTS), since the YAML's model keys belong to the backbone it names."""
    before = _backbone_module(config)
    set_key(config, "model.backbone", backbone)
    after = models.BACKBONES.get(config["model"]["backbone"])
    if after is not None and after is not before and after.SWITCH_DEFAULTS:
        switched = copy.deepcopy(after.SWITCH_DEFAULTS)
        config["model"] = {**_optional_fields(after), **switched["model"], "backbone": config["model"]["backbone"]}
        config["train"].update(switched.get("train", {}))


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
        keys = sorted(".".join(parents + [k]) + (".*" if isinstance(node[k], dict) else "") for k in node)
        shortcuts = [k for k in sorted(_shortcuts(config)) if k not in keys] if not parents else []
        raise ConfigError(f"unknown parameter {dotted!r}; known here: {', '.join(shortcuts + keys)}")
    node[leaf] = value


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check every key against the schema below (and the task's own rules); return the validated config
    (a plain nested dict with every key present, each default filled in from the schema) or raise
    ConfigError naming the dotted key at fault."""
    def fail(key: str, why: str):
        raise ConfigError(f"{source}: {key}: {why}")

    checked = _check(Experiment, config, "", source).model_dump()
    task = tasks.TASKS[checked["task"]]
    column = checked["target"]["column"]
    if task.targets and column not in task.targets:
        fail("target.column", f"{column!r} is not a {task.name} target ({', '.join(task.targets)})")
    if not task.targets and column in NOT_TARGETS:
        fail("target.column", f"{column!r} is not a label a {task.name} can learn (it is read as an input "
                              f"or describes the photo: {', '.join(NOT_TARGETS)})")
    backbone = checked["model"].setdefault("backbone", task.backbones[0])   # the task's default backbone
    if backbone not in task.backbones:
        fail("model.backbone", f"{backbone!r}: the {task.name} task takes {', '.join(task.backbones)}")
    model = checked["model"] = _check(models.BACKBONES[backbone].Schema, checked["model"], "model.", source).model_dump()
    if task.reads_gender and backbone == "cnn" and model["dense_1"] is None:
        fail("model.dense_1", "missing: the layer after the gender input needs a width")
    filters = checked["search"]["filters"]
    if filters is not None and "conv" in model and len(filters) != len(model["conv"]):
        fail("search.filters", f"needs one list of choices per conv layer ({len(model['conv'])}), got {filters!r}")
    task.check(checked, fail)
    return checked


# --- the schema: one pydantic model per section; strict (no "3" for 3, no true for 1), no unknown keys ---

class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


PositiveInt = Annotated[int, Field(gt=0)]
Share = Annotated[float, Field(gt=0, lt=1)]
Dropout = Annotated[float, Field(ge=0, lt=1)]
Switch = Literal[False] | None


def _ordered(pair: list[float]) -> list[float]:
    if not 0 <= pair[0] <= pair[1]:
        raise ValueError(f"must be a range [low, high] with 0 <= low <= high, got {pair}")
    return pair


def _increasing(pair: list[float]) -> list[float]:
    if not pair[0] < pair[1]:
        raise ValueError(f"must be [low, high] with low < high, got {pair}")
    return pair


Factors = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_ordered)]
Interval = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_increasing)]
Choices = Annotated[list[PositiveInt], Field(min_length=1)]


def _even(value: int) -> int:
    if value % 2:
        raise ValueError("must be an even integer >= 10")
    return value


class DataSet(_Section):
    """One of several data sets an experiment trains on (data/loading.read_sets)."""
    source: Annotated[str, Field(min_length=1)]   # a manifest CSV or folder (relative: to the YAML)
    name: str | None = None                       # its name in slices and metrics (default: the folder's)
    image_region: Literal[REGIONS] | None = None  # ready crops of a region, or `photo`: cut by landmarks
    labels: dict[str, float | str] | None = None  # fixed label values for every photo ({mouth: 0.0})
    weight: Annotated[float, Field(gt=0)] = 1.0   # each of its photos' sample weight in training
    folders: dict[str, dict[str, Any]] | None = None
    split: Literal["auto", "person", "phash", "video", "content"] | None = None   # default: data.split
    size: PositiveInt | None = None               # at most this many photos (a stable choice by path)
    max_failure_share: Annotated[float, Field(ge=0, le=1)] = 0.1   # photos the landmark cut may miss


class Data(_Section):
    source: Annotated[str, Field(min_length=1)] = "synthetic"   # synthetic, or a manifest CSV / folder
    size: Annotated[int, Field(ge=10), AfterValidator(_even)] = 2000   # synthetic photos
    seed: int = 0
    rounded: bool = True
    persons: PositiveInt | None = None   # how many people the synthetic photos show (None: the generator's default)
    image_region: Literal[REGIONS] | None = None
    folders: dict[str, dict[str, Any]] | None = None
    gender: Literal["auto", "model", "labels", "unknown"] = "auto"   # where a regression's gender input comes from
    gender_model: Annotated[str, Field(min_length=1)] = "gender"   # the registered model `auto` / `model` read
    split: Literal["auto", "person", "phash", "video", "content"] = "auto"   # data/splits.split_names
    # a model trained on fewer photos is logged but not registered under the experiment's shared name
    # (`faceattr train --register-few-photos` registers it): below 100, validation and test hold ~15 photos
    # each, and one photo moves their accuracy by 7 points
    min_photos: PositiveInt = 100
    random_labels: bool = False        # synthetic photos, a target they do not draw: random labels (smoke runs)
    person: str | int | None = None    # identity: the target person
    unseen_share: Share | None = None  # identity: share of the other people never seen in training
    holdout: Share | None = None       # identity: share of each seen person's photos held out
    # several data sets at once (then `source` is unused); a YAML may write `data:` as their list
    sets: Annotated[list[DataSet], Field(min_length=1)] | None = None


class Augment(_Section):    # data/augment.py
    flip: bool | None = None
    shift: Annotated[float, Field(ge=0, le=0.5)] | Switch = None
    brightness: Annotated[float, Field(ge=0, le=1)] | Switch = None
    contrast: Factors | Switch = None
    hue: Annotated[float, Field(ge=0, le=0.5)] | Switch = None
    saturation: Factors | Switch = None
    noise: Annotated[float, Field(ge=0, le=1)] | Switch = None
    downscale: Annotated[float, Field(gt=0, lt=1)] | Switch = None   # smallest side factor


class Train(_Section):
    """The seeds' training schedule; an experiment YAML overrides any of it."""
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 32
    learning_rate: Share = 1e-3
    seed: int = 0
    lr_factor: Share = 0.1
    lr_patience: PositiveInt = 3
    min_lr: Annotated[float, Field(ge=0)] = 1e-6
    early_stopping_patience: PositiveInt = 6
    # a smaller drop of val_loss is no improvement (without it, 1e-6-sized gains at the floor LR keep runs
    # going to the end)
    min_delta: Annotated[float, Field(ge=0)] = 1e-4
    verbose: Literal[0, 1, 2] = 2
    augment: bool | Augment = False   # random flips, shifts, lighting on the training split (data/augment.py)
    balance: Literal["class_weight", "none"] = "class_weight"   # identity: ~1:30 positives


def _rising(edges: list[float]) -> list[float]:
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"band edges must rise, got {edges}")
    return edges


class Evaluation(_Section):
    # collapsed: the model's predictions on validation have less than this share of the labels' spread
    collapse_threshold: Share = 0.25
    first_outputs: PositiveInt = 15
    # how many validation photos the error gallery shows (0: none, for photos a team may not copy into its
    # tracking store)
    gallery: Annotated[int, Field(ge=0)] = 16
    # label columns to report metrics for besides gender, each with band edges for numbers or null
    # (evaluate.slice_labels); smaller slices than min_slice are reported, not gated
    slices: dict[str, Annotated[list[float], Field(min_length=1), AfterValidator(_rising)] | None] = {}
    min_slice: PositiveInt = 20
    landmark_baseline: bool = False   # log the eye / mouth aspect-ratio baseline on whole faces


class Search(_Section):    # what `faceattr tune` may vary (tuning/space.py)
    filters: list[Choices] | None = None      # one list of choices per conv layer
    dense_0: Choices | None = None
    dense_1: Choices | None = None
    alpha: Annotated[list[Annotated[float, AfterValidator(_alpha)]], Field(min_length=1)] | None = None
    head: Choices | None = None               # one width for every head layer
    dropout: Interval | None = None
    learning_rate: Interval | None = None


# Manifest columns that are no regression's label: inputs (gender), who and where a photo is, its boxes.
NOT_TARGETS = ("path", "gender", "person", "video", "image_region", "cut_by", "row", "set", "weight", "split", "cut")


class Target(_Section):
    """What the model answers (tasks.Target): declared once, here; `target: eyes` is `target: {column: eyes}`."""
    column: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]   # label and answer column
    range: Interval = [0.0, 1.0]       # labels outside it are refused before any compute; answers are clipped
    unit: str | None = None            # an amount's unit (years): judged by its MAE; None: a score read at the middle
    reads: str = ""                    # how the answer reads, for people: "1 smiling, 0 not"


def _target(value):
    return {"column": value} if isinstance(value, str) else value


class Experiment(_Section):
    name: str
    task: Literal[tuple(tasks.TASKS)]
    target: Annotated[Target, BeforeValidator(_target)]
    region: Literal[REGIONS]
    data: Data
    model: dict[str, Any]     # checked against its backbone's schema (faceattr/models: each module's Schema)
    train: Train
    evaluation: Evaluation
    search: Search


# --- promotion policies (registry/<model>.yaml, read by faceattr/promotion.py) ---

class Bound(_Section):
    min: float | None = None
    max: float | None = None


class Margin(_Section):
    relative: Annotated[float, Field(ge=0)] = 0.0    # the challenger beats the champion by this share ...
    absolute: Annotated[float, Field(ge=0)] = 0.0    # ... and by this much


# promotion.judge_photos: over all the photos, and per set as `<metric>.set.<name>` (held-out photos of
# several sets); `photos_caught`: the share of photos labelled over 0.5 answered over 0.5 (yawns caught),
# `photos_false_alarms`: the share labelled under 0.5 answered over it (whole frames called yawning)
PHOTO_METRICS = ("photos_accuracy", "photos_scored_share", "photos_mae", "photos_caught", "photos_false_alarms")
PER_SET = ".set."


class PhotoGate(_Section):
    """Whole photos judged through the served model (promotion.judge_photos)."""
    data: str | None = None                          # labelled whole photos (manifest CSV / folder); relative
                                                     # to the policy file; `--eval-photos` overrides
    held_out: bool = False                           # or: the whole photos in the test split of the sets the
                                                     # model trained on (fixed by person / content: never seen)
    thresholds: dict[str, Bound] = {}                # on photos_accuracy, photos_scored_share, photos_mae


class SliceRule(_Section):
    """Promotion by slice (evaluate.slice_table's rows, read from the challenger's training run)."""
    metric: str                                      # e.g. val_accuracy: logged per slice
    min_worst: float | None = None                   # the worst gated slice is at least this ...
    max_worst: float | None = None                   # ... or at most this (a loss)
    max_gap: Annotated[float, Field(ge=0)] | None = None   # best - worst gated slice of one column


class BaselineRule(_Section):
    """The model beats a training-free baseline its training run logged, overall and on every set where
    both were measured (e.g. test_accuracy_at_0_5 against test_landmark_baseline_accuracy)."""
    metric: str
    baseline: str


class Policy(_Section):
    """A promotion policy: `registry/<model>.yaml` (`Policy.load`), judged by promotion.decide."""
    model: str | None = None
    metric: str                                      # compared between champion and challenger
    higher_is_better: bool
    thresholds: dict[str, Bound] = {}                # every champion meets them
    require_no_collapse: bool = True
    collapse_threshold: Share | None = None          # None: the experiment's evaluation.collapse_threshold
    margin: Margin = Margin()
    slices: SliceRule | None = None
    photos: PhotoGate | None = None
    baseline: BaselineRule | None = None

    @classmethod
    def load(cls, model: str, path: str | Path | None = None) -> "Policy | BundlePolicy":
        """`registry/<model>.yaml` (or `path`), checked; ConfigError naming the file and the key at fault.
        `photos.data` (a bundle's `bundle.photos`) comes back resolved against the policy file's folder.
        A file with a `bundle:` section is a bundle's policy (BundlePolicy)."""
        path = Path(path) if path else POLICY_DIR / f"{model}.yaml"
        if not path.is_file():
            raise ConfigError(f"no promotion policy for {model!r}: {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if isinstance(raw, dict) and "bundle" in raw:
            policy = _check(BundlePolicy, raw, "", str(path))
            policy.bundle.photos = str((path.parent / policy.bundle.photos).resolve())
            return policy.model_copy(update={"model": policy.model or model})
        policy = validate_policy(raw, str(path))
        if policy.photos and policy.photos.data:
            policy.photos.data = str((path.parent / policy.photos.data).resolve())
        return policy.model_copy(update={"model": policy.model or model})

    @property
    def photo_thresholds(self) -> dict[str, Bound]:
        return self.photos.thresholds if self.photos else {}

    def as_params(self) -> dict[str, str]:
        """The policy as the promotion run's `policy.*` params."""
        out = {"policy.metric": self.metric, "policy.higher_is_better": self.higher_is_better,
               "policy.require_no_collapse": self.require_no_collapse,
               "policy.margin_relative": self.margin.relative, "policy.margin_absolute": self.margin.absolute}
        for key, bound in {**self.thresholds, **self.photo_thresholds}.items():
            out.update({f"policy.{key}.{k}": v for k, v in bound.model_dump(exclude_none=True).items()})
        out.update({f"policy.slices.{k}": v for k, v in (self.slices.model_dump(exclude_none=True)
                                                        if self.slices else {}).items()})
        out.update({f"policy.baseline.{k}": v for k, v in (self.baseline.model_dump() if self.baseline else {}).items()})
        if self.photos and self.photos.held_out:
            out["policy.photos.held_out"] = True
        return {k: str(v) for k, v in out.items()}


class BundleGate(_Section):
    """The whole photos a bundle is compared with its members on (bundling.judge)."""
    photos: Annotated[str, Field(min_length=1)]      # a manifest CSV / folder of whole photos; relative to the file
    size: PositiveInt = 40                           # the first this many photos
    tolerance: Annotated[float, Field(ge=0)] = 1e-5  # the most a number may differ from the member's own


class BundlePolicy(_Section):
    """A bundle's policy: `registry/<bundle>.yaml` with a `bundle:` section (faceattr/bundling.py)."""
    model: str | None = None
    bundle: BundleGate


def validate_policy(raw: Any, source: str) -> Policy:
    """A promotion policy file's content, checked; ConfigError naming the key at fault."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    policy = _check(Policy, raw, "", source)
    photos = policy.photo_thresholds
    bounds = {**{f"thresholds.{k}": b for k, b in policy.thresholds.items()},
              **{f"photos.thresholds.{k}": b for k, b in photos.items()}}
    for key, bound in bounds.items():
        if bound.min is None and bound.max is None:
            raise ConfigError(f"{source}: {key}: expected {{min: X}} and/or {{max: Y}}")
    unknown = sorted(k for k in photos if k.split(PER_SET)[0] not in PHOTO_METRICS)
    if unknown:
        raise ConfigError(f"{source}: photos.thresholds.{unknown[0]}: not a whole-photo metric "
                          f"({', '.join(PHOTO_METRICS)}; per set: <metric>{PER_SET}<name>)")
    if policy.photos is not None and policy.photos.data and policy.photos.held_out:
        raise ConfigError(f"{source}: photos: give data or held_out, not both")
    rule = policy.slices
    if rule is not None and rule.min_worst is None and rule.max_worst is None and rule.max_gap is None:
        raise ConfigError(f"{source}: slices: expected min_worst, max_worst and/or max_gap")
    return policy


def _check(schema: type[BaseModel], section: dict, prefix: str, source: str) -> BaseModel:
    """`section` validated; ConfigError naming the dotted key of the most specific problem."""
    try:
        return schema.model_validate(section)
    except ValidationError as exc:
        def key(error) -> list:  # drop the union-member tags pydantic puts in locations ('bool', 'Augment')
            return [str(p) for p in error["loc"] if isinstance(p, int) or not _union_tag(p)]

        error = max(exc.errors(), key=lambda e: len(key(e)))
        dotted = prefix + ".".join(key(error))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            raise ConfigError(f"{source}: {dotted}: missing") from None
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{source}: unknown parameter {dotted!r}") from None
        raise ConfigError(f"{source}: {dotted}: {message}, got {error['input']!r}") from None


def _union_tag(part: str) -> bool:
    """A location part naming a union member's type ('bool', 'list[int]', 'constrained-float', 'Augment'),
    not a key: keys in faceattr's YAML are lower-case words joined by underscores."""
    return "[" in part or "-" in part or part in ("bool", "int", "float", "str", "none") or part[:1].isupper()


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


def from_params(params: dict[str, str], source: str = "run params") -> dict[str, Any]:
    """The validated config of a run logged before runs carried config.json, rebuilt from its dotted
    params (flatten's inverse: `model.conv.0.filters` -> config["model"]["conv"][0]["filters"]).
    Params that name no config key (`data.digest`, `gender_source`, `mlflow run`'s `-P epochs`) are left out."""
    tree: dict[str, Any] = {}
    for key, text in params.items():
        parts = key.split(".")
        if not _config_key(parts):
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _param_value(text)
    tree = _lists(tree)
    return validate(_merge(defaults(tree), tree), source)


def _config_key(parts: list[str]) -> bool:
    """Whether dotted `parts` name a key of the schema (a section's field, or a top-level leaf)."""
    fields = Experiment.model_fields
    if parts[0] not in fields:
        return False
    if parts == ["target"]:                          # logged before targets were declared: `target: eyes`
        return True
    section = fields[parts[0]].annotation
    if not (isinstance(section, type) and issubclass(section, BaseModel)) and parts[0] != "model":
        return len(parts) == 1                       # name, task, target, region
    known = ({f for module in models.MODULES for f in module.Schema.model_fields} if parts[0] == "model"
             else section.model_fields)
    return len(parts) > 1 and parts[1] in known


def _param_value(text: str) -> Any:
    """A param's text as the value it was logged from (str() of a YAML scalar, list or mapping)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _lists(node: Any) -> Any:
    """Mappings keyed 0..n-1 (flattened lists) back into lists."""
    if not isinstance(node, dict):
        return node
    node = {k: _lists(v) for k, v in node.items()}
    if node and set(node) == {str(i) for i in range(len(node))}:
        return [node[str(i)] for i in range(len(node))]
    return node


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base
