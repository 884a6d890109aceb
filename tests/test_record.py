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


def test_a_model_kept_in_the_outbox_is_logged_by_sync_with_its_record(mlflow_store, tmp_path):
    """Offline, log_model keeps the Keras file, the record and the input example (its image bytes as
    base64 text); `faceattr sync` logs the same model from them: the same record, the same answer."""
    from types import SimpleNamespace

    import mlflow
    import numpy as np
    import pandas as pd

    from faceattr import models
    from faceattr.serving import image_bytes, load
    from faceattr.tracking import packaging

    cfg = config.load("identity", {"person": "p0003"})
    model = models.build(cfg)
    pixels = np.random.default_rng(0).integers(0, 255, (*model.inputs[0].shape[1:3], 3), dtype=np.uint8)
    example = pd.DataFrame({"image": [image_bytes(pixels)], "kind": ["crop"]})
    offline = SimpleNamespace(call=lambda *args, **kwargs: None, dir=tmp_path)     # every tracking call failed
    assert packaging.log_model(offline, model, cfg, example, served={"threshold": 0.42}, made_by="faceattr") is None
    assert packaging.kept_model(tmp_path / "model")
    with mlflow.start_run():
        info = packaging.log_saved_model(tmp_path / "model")
    served = load(info.model_uri)
    # the record written into the outbox is the one read back (what this model was trained on, written out)
    kept = served.record
    assert (kept.name, kept.task, kept.target, kept.region, kept.reads) == ("identity", "identity", "person", "photo",
                                                                           "image")
    assert (kept.person, kept.threshold, kept.crops.made_by, kept.format) == ("p0003", 0.42, "faceattr",
                                                                              record.FORMAT)
    answer = served.predict(None, example)
    assert answer["p_person"][0] == pytest.approx(float(model.predict_on_batch({"image": pixels[None].astype("float32")})[0, 0]), abs=1e-5)
    assert answer["is_person"][0] == (answer["p_person"][0] >= 0.42)


# --- input kinds (faceattr/models/inputs.py) --------------------------------------------------------

# what branching on the kind looks like: the kind's names compared or spelled outside models/
KIND_BRANCH = re.compile(r"""["']descriptor["']|[=!]= ["']image["']|reads [=!]=|input_name|backbone_reads"""
                         r"""|DESCRIPTOR_PINS|is (not )?inputs\.|inputs\.\w+ is |[=!]= inputs\.|isinstance\([^)]*inputs\."""
                         r"""|kind\.name [=!]=""")


def test_no_module_outside_models_branches_on_what_a_model_reads():
    found = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
             for path in (REPO / "faceattr").rglob("*.py") if "models" not in path.relative_to(REPO).parts
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if KIND_BRANCH.search(line) and not path.match("data/loading.py")]   # the split's two arrays
    assert not found, "\n".join(found)


def test_backbones_declare_their_input_kind_and_a_built_model_shows_it():
    from faceattr import models

    crops, faces = config.load("gender"), config.load("gender", {"model.backbone": "dlib-resnet"})
    assert models.input_kind(crops) is inputs.IMAGE and models.input_kind(faces) is inputs.DESCRIPTOR
    assert inputs.of_model(models.build(crops)) is inputs.IMAGE
    assert inputs.of_model(models.build(faces)) is inputs.DESCRIPTOR
    assert inputs.IMAGE.shape("eye") == (48, 48, 3) and inputs.DESCRIPTOR.shape("face") == (128,)
    assert inputs.IMAGE.augments and not inputs.DESCRIPTOR.augments
    assert inputs.IMAGE.pins == () and "dlib-bin==20.0.1.post1" in inputs.DESCRIPTOR.pins


def _descriptor_head(descriptors):
    """A one-layer gender head on face descriptors and 8 rows of `descriptors` (8, 128) to fit it on: a model
    `train.fit` takes in a second, with no photos to read."""
    import keras
    import numpy as np
    import pandas as pd

    from faceattr.data.loading import Split

    descriptor = keras.Input((128,), name="descriptor")
    model = keras.Model({"descriptor": descriptor}, keras.layers.Dense(2, activation="softmax")(descriptor))
    rows = Split({"image": np.zeros((8, 60, 60, 3), np.uint8), "descriptor": np.asarray(descriptors, np.float32)},
                 np.full((8, 2), 0.5, np.float32), np.eye(2)[[0, 1] * 4], pd.DataFrame({"path": ["x"] * 8}), "descriptor")
    return model, rows


def test_augmentation_is_asked_of_the_input_kind(monkeypatch):
    """train.augment reaches the pipeline for a kind that augments (crops), never for face descriptors."""
    import numpy as np

    from faceattr import train

    cfg = config.load("gender", {"epochs": 1, "train.verbose": 0, "model.backbone": "dlib-resnet", "train.augment": "true"})
    calls = []
    real = train.to_tf_dataset
    # record what the pipeline is asked; build it without augmentation (which needs pixels)
    monkeypatch.setattr(train, "to_tf_dataset", lambda *a, augment=False, **k: calls.append(augment) or real(*a, **k))
    model, rows = _descriptor_head(np.zeros((8, 128)))
    assert cfg["train"]["augment"]                   # the experiment asks for it ...
    train.fit(model, cfg, rows, rows)
    assert calls == [False, False]                   # ... and descriptors are not augmented
    import dataclasses

    from faceattr.models import face_head

    monkeypatch.setattr(face_head, "READS", dataclasses.replace(inputs.DESCRIPTOR, augments=True))
    calls.clear()
    train.fit(model, cfg, rows, rows)
    assert calls[0] == cfg["train"]["augment"]


def test_a_model_whose_fit_memory_was_released_trains_on():
    """train.release_fit_memory drops Keras' traced steps; a later fit (Hyperband's next round) traces them
    again and goes on from the weights it had."""
    import numpy as np

    from faceattr import train

    cfg = config.load("gender", {"epochs": 1, "train.verbose": 0, "model.backbone": "dlib-resnet"})
    model, rows = _descriptor_head(np.random.default_rng(0).normal(size=(8, 128)))
    train.fit(model, cfg, rows, rows)
    train.release_fit_memory(model)
    assert model.train_function is None
    before = [w.copy() for w in model.get_weights()]
    history = train.fit(model, cfg, rows, rows, initial_epoch=0)
    assert len(history.history["loss"]) == 1
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
