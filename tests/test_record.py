"""The names faceattr writes into MLflow are defined once (faceattr/names.py); the logged model's record
(faceattr/record.py) is read in one place."""

import json
import re
from pathlib import Path

import pytest

from faceattr import config, record
from faceattr.errors import DataError
from faceattr.models import inputs

REPO = Path(__file__).resolve().parents[1]
# tag, param and artifact names as string literals (faceattr.*, MLflow's own run name and parent tags,
# the logged model's files, the run's artifacts) and role values compared with the role tag
LITERAL = re.compile(r"""["'](faceattr\.[a-z_]+|mlflow\.(runName|parentRunId|user|source\.[a-z]+|note\.content)|"""
                     r"""spec\.json|record\.json|model\.keras|gender_model\.keras|collapse_check\.json|config\.json|"""
                     r"""slices\.json|promotion\.json|report\.html|plots/[a-z_]+\.png|gender_source|collapsed|"""
                     r"""leans_on_gender)["']|(ROLE\)? ?(==|:|=) ?|ROLE = )"[a-z]+\"""")


def test_names_are_written_once():
    """Outside faceattr/names.py no module spells a tag, param or artifact name: a renamed tag cannot
    leave a reader behind."""
    found = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
             for path in (REPO / "faceattr").rglob("*.py") if path.name != "names.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if LITERAL.search(line)]
    assert not found, "\n".join(found)


# --- the record -------------------------------------------------------------------------------------

# spec.json as models logged before the record wrote it (the keys each version added)
OLD_EYES = {"name": "eyes", "task": "regression", "target": "eyes", "region": "eyes", "gender_model": True}
OLD_IDENTITY = {"name": "identity", "task": "identity", "target": "person", "region": "photo", "gender_model": False,
                "input": "descriptor", "person": "p0001"}
OLD_MOUTH = {**OLD_EYES, "name": "mouth", "target": "mouth", "region": "mouth", "input": "image",
             "gender_input": "descriptor", "crops": {"region": "mouth", "made_by": "ready"}}


def test_an_old_spec_is_read_with_what_it_lacked_filled_in():
    """What models logged before the record lack is filled in by read() alone: no `input` reads crops, no
    gender_input means a gender model reading crops, no threshold is identity's fixed 0.5, no crops is
    no refusal of whole photos."""
    eyes = record.read(OLD_EYES)
    assert (eyes.format, eyes.faceattr, eyes.reads, eyes.gender_reads) == (0, None, "image", "image")
    assert eyes.kind is inputs.IMAGE and eyes.threshold is None and eyes.photo_refusal() is None
    identity = record.read(OLD_IDENTITY)
    assert identity.kind is inputs.DESCRIPTOR and identity.gender_kind is None
    assert identity.threshold == 0.5 and identity.person == "p0001"
    mouth = record.read(OLD_MOUTH)
    assert mouth.gender_kind is inputs.DESCRIPTOR and "ready mouth crops" in mouth.photo_refusal()
    assert mouth.pins() == sorted(inputs.DESCRIPTOR_PINS)      # its gender model computes descriptors


def test_a_new_record_round_trips_and_keeps_what_training_chose():
    cfg = config.load("identity", {"person": "p0002"})
    made = record.make(cfg, served={"threshold": 0.37}, made_by="photo")
    assert (made.format, made.reads, made.person, made.threshold) == (record.FORMAT, "image", "p0002", 0.37)
    assert made.crops == record.Crops(region=cfg["region"], made_by="photo") and made.pins() == []
    again = record.read(json.loads(made.model_dump_json()))
    assert again == made and again.threshold == 0.37           # not the old models' 0.5
    assert record.make(config.load("gender", {"model.backbone": "dlib-resnet"})).reads == "descriptor"


@pytest.mark.parametrize("raw, message", [
    ({**OLD_EYES, "format": record.FORMAT + 1, "faceattr": "9.0", "gender_reads": None}, "newer faceattr"),
    ({**OLD_EYES, "input": "sound"}, "'sound' is not an input kind"),
    ({**OLD_EYES, "colour": "blue"}, "colour"),
])
def test_a_record_faceattr_cannot_read_is_refused_naming_why(raw, message):
    with pytest.raises(DataError, match=message):
        record.read(raw, "models:/eyes/1")
