"""The record of a trained model: what it is, what it reads and how it is served, in one typed value.

Packaging writes it beside the Keras files (`record.json`); the served model answers from it; promotion,
sync and the report read it from the logged model instead of working it out again from run params.
`read` is the one place that fills in what a model logged before the record lacks: those models carry
`spec.json` (format 0), whose keys are mapped here and nowhere else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from faceattr import __version__, models, tasks
from faceattr.data.regions import MADE_BY, photo_refusal
from faceattr.errors import DataError
from faceattr.models import inputs

# The record's format; a change that old readers cannot follow bumps it, and `read` upgrades.
# 2: a regression's declared range and unit (`target_range`, `unit`; format 1 answered 0..1 scores only).
FORMAT = 2


class Crops(BaseModel):
    """How the training crops were made: whole photos cut by faceattr, or ready crops made elsewhere."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    region: str
    made_by: Literal[MADE_BY]


class ModelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: int = FORMAT
    faceattr: str | None = __version__   # the faceattr that logged it; None: logged before the record
    name: str                            # the experiment's name
    task: str
    target: str                          # the answer's column (tasks.Target.column)
    target_range: tuple[float, float] | None = None   # a regression's declared range; None: 0..1 or no range
    unit: str | None = None              # an amount's unit (age: years); None: a score
    region: str
    reads: str = inputs.IMAGE.name       # the Keras model's input kind (faceattr/models/inputs.py)
    gender_reads: str | None = None      # the bundled gender model's input kind; None: no gender model
    person: str | None = None            # identity: who it was trained to recognise
    threshold: float | None = None       # identity: the decision threshold chosen on validation
    crops: Crops | None = None           # None: logged before crops were recorded; whole photos are served

    @field_validator("reads", "gender_reads")
    @classmethod
    def _known_kind(cls, name):
        if name is not None and name not in inputs.KINDS:
            raise ValueError(f"{name!r} is not an input kind faceattr knows ({', '.join(inputs.KINDS)})")
        return name

    @property
    def kind(self):
        return inputs.named(self.reads)

    @property
    def gender_kind(self):
        return None if self.gender_reads is None else inputs.named(self.gender_reads)

    @property
    def settings(self) -> dict:
        """What the task's answer and metrics read (tasks.Task.answer / metrics: target, person, threshold)."""
        return self.model_dump(exclude_none=True)

    def photo_refusal(self) -> str | None:
        """Why this model must not be served whole photos, or None (data/regions.photo_refusal)."""
        return photo_refusal(self.crops.model_dump() if self.crops else None)

    def pins(self) -> list[str]:
        """The pinned requirements its inputs need beyond faceattr's own (dlib for descriptors)."""
        kinds = [self.kind] + ([self.gender_kind] if self.gender_kind else [])
        return sorted({pin for kind in kinds for pin in kind.pins})


def make(config: dict, gender_model=None, served: dict | None = None, made_by: str | None = None) -> ModelRecord:
    """The record of a model trained with `config` (packaging): `served` its settings chosen on validation
    (tasks.Task.calibrate), `made_by` how its training crops were made (regions.MADE_BY)."""
    target = tasks.of(config).target
    declared = {} if target.range == (0.0, 1.0) else {"target_range": target.range}
    return ModelRecord(name=config["name"], task=config["task"], target=target.column, unit=target.unit, **declared,
                       region=config["region"],
                       reads=models.input_kind(config).name,
                       gender_reads=None if gender_model is None else inputs.of_model(gender_model).name,
                       crops=None if made_by is None else Crops(region=config["region"], made_by=made_by),
                       **tasks.of(config).served_settings(config), **(served or {}))


def read(raw: dict, source: str = "the model's record") -> ModelRecord:
    """The record from its JSON, upgraded from any older format. `source` names the file in errors."""
    raw = dict(raw)
    if "format" not in raw:   # spec.json: the record of models logged before it had a format
        gender = raw.pop("gender_model", False)
        gender_reads = raw.pop("gender_input", inputs.IMAGE.name)
        raw.update(format=0, faceattr=None, reads=raw.pop("input", inputs.IMAGE.name),
                   gender_reads=gender_reads if gender else None)
        if "task" in raw:      # settings chosen on validation after the model was logged: the task's old ones
            raw = {**tasks.of(raw).served_before, **raw}
    if raw["format"] > FORMAT:
        raise DataError(f"{source}: format {raw['format']} was written by a newer faceattr "
                        f"({raw.get('faceattr')}); this one reads formats up to {FORMAT}: upgrade faceattr")
    try:
        return ModelRecord.model_validate(raw)
    except ValidationError as exc:
        raise DataError(f"{source}: {exc}") from exc
