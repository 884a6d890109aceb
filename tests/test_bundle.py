"""One call, every attribute (issue 28): a bundle of champions finds each face once and answers as each of
its members would. Members are one-epoch models on synthetic photos (a gender head on dlib descriptors,
an eyes and a mouth regression that bundle it), asked about real whole faces (UTKFace, pasted together).

Each test names the one-line break it was seen to fail on."""

from __future__ import annotations

import io

import mlflow
import pandas as pd
import pytest
import yaml
from helpers import eager_steps, shared_data, store_in
from PIL import Image

from faceattr import bundling, config, experiment, record, registry, serving
from faceattr.errors import ConfigError, FaceattrError
from faceattr.features import face_descriptor
from faceattr.serving.bundle import FACES_FOUND

TINY = {"epochs": 1, "data.size": 20, "train.verbose": 0}
MEMBERS = ["gender", "eyes", "mouth", "glasses"]
# glasses reads the descriptor too (with its eye band's HOG): on synthetic photos, with random labels
SYNTHETIC = {"data.sets": None, "evaluation.slices": {}, "data.random_labels": True}


def _train(name: str, extra: dict | None = None) -> str:
    cfg = config.load(name, {**TINY, **(extra or {})})
    with eager_steps():
        outcome = experiment.train(cfg, register=True, few_photos=True)
    registry.move_champion(cfg["name"], outcome.version)   # the bundle reads champions; promotion is tested elsewhere
    return outcome.version


@pytest.fixture(scope="module")
def members(module_store_dir, synthetic_cache):
    """Four champions in one store (the gender champion first: the regressions bundle it), and a bundle."""
    with pytest.MonkeyPatch.context() as mp:
        opened = store_in(module_store_dir, mp)
        next(opened)
        # the gender head's region `photo`: its descriptor is still the face's, the one the regressions'
        # bundled gender model reads (region `face`), so one descriptor a face serves both
        versions = {"gender": _train("gender", {"model.backbone": "dlib-resnet", "region": "photo"}),
                    "eyes": _train("eyes"),
                    "mouth": _train("mouth"),
                    "glasses": _train("glasses", SYNTHETIC)}
        made = bundling.make("faces", MEMBERS)
        yield versions, made
        for _ in opened:
            pass


@pytest.fixture
def store(members, module_store_dir, monkeypatch):
    yield from store_in(module_store_dir, monkeypatch)


def _photo(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photos() -> dict[str, bytes]:
    """No face; one face; a large face beside a small one (the large one the subject); two faces of one
    size, neither over the centre (no subject)."""
    root = shared_data("utkface-gender")
    faces = [Image.open(root / p).convert("RGB") for p in pd.read_csv(root / "labels.csv")["path"][:3]]
    big_small = Image.new("RGB", (400, 240), (128, 128, 128))
    big_small.paste(faces[0].resize((240, 240)), (0, 0))
    big_small.paste(faces[1].resize((120, 120)), (260, 60))
    twins = Image.new("RGB", (400, 200))
    twins.paste(faces[0], (0, 0))
    twins.paste(faces[1], (200, 0))
    return {"none": _photo(Image.new("RGB", (160, 160), (200, 200, 200))), "one": _photo(faces[2]),
            "big_small": _photo(big_small), "twins": _photo(twins)}


def _ask(model, shots: dict, params=None) -> pd.DataFrame:
    rows = pd.DataFrame({"image": list(shots.values()), "kind": "photo"})
    return model.predict(None, rows, params).set_axis(list(shots))


def test_the_answer_has_one_row_per_photo_and_every_face_in_it(store, members):
    """Seen to fail with the faces sorted smallest first (faces_found's first entry was the small face) and
    with `subject` set for every face."""
    _, made = members
    bundle = serving.load(f"models:/faces/{made.version}")
    out = _ask(bundle, photos())
    assert list(out.index) == ["none", "one", "big_small", "twins"]
    assert {"p_female", "gender", "eyes", "mouth", "faces", "error", FACES_FOUND} <= set(out.columns)
    assert out.loc["none", "faces"] in (0, None) and out.loc["none", FACES_FOUND] == []
    assert "no face" in out.loc["none", "error"] and out.loc["none", "eyes"] is None
    one = out.loc["one"]
    assert one["faces"] == 1 and one["error"] is None and isinstance(one["eyes"], float)
    assert [f["subject"] for f in one[FACES_FOUND]] == [True]
    found = out.loc["big_small", FACES_FOUND]
    assert out.loc["big_small", "faces"] == 2 and [f["subject"] for f in found] == [True, False]
    assert found[0]["box"][2] > found[1]["box"][2]                       # largest first, x y w h
    assert found[0]["eyes"] == out.loc["big_small", "eyes"] and isinstance(found[1]["mouth"], float)
    twins = out.loc["twins"]   # the single-model rule finds no subject here: neither does the bundle
    assert "faces of similar size" in twins["error"] and twins["eyes"] is None
    assert [f["subject"] for f in twins[FACES_FOUND]] == [False, False] and twins["faces"] == 2


def test_each_member_answers_as_it_does_alone(store, members):
    """The subject's flat columns equal each member's own served answer (kind=photo) within 1e-5, and the
    photos a member refuses the bundle refuses. Seen to fail with the members' bundled gender model left
    unasked (`if False:` for `if member.gender_model is not None:`: eyes and mouth read "unknown")."""
    versions, made = members
    bundle = serving.load(f"models:/faces/{made.version}")
    shots = photos()
    together = _ask(bundle, shots)
    for name in MEMBERS:
        alone = _ask(serving.load(f"models:/{name}/{versions[name]}"), shots)
        assert bundling.differences(name, alone, together, [c for c in alone.columns if c not in ("faces", "error")],
                                    1e-5, list(shots)) == []


def test_one_descriptor_per_face_whoever_reads_it(store, members, monkeypatch):
    """The gender head reads descriptors, the regressions' bundled gender model does too, and glasses reads
    them with its HOG: still one descriptor per face (3 faces in these photos), and one per subject with
    faces=subject. Seen to fail with Descriptor.cache_key returning (name, region) (the gender head's
    region `photo` and the gender input's `face` each computed one: 6 calls), and with the bundle's `read`
    not handed to DescriptorHog.of_photo (glasses computed its own: 6 calls)."""
    _, made = members
    bundle = serving.load(f"models:/faces/{made.version}")
    calls = []
    real = face_descriptor.describe
    monkeypatch.setattr(face_descriptor, "describe", lambda *a, **k: calls.append(1) or real(*a, **k))
    shots = {k: v for k, v in photos().items() if k in ("one", "big_small")}
    out = _ask(bundle, shots)
    assert len(calls) == 3
    calls.clear()
    only = _ask(bundle, shots, {"faces": "subject"})
    assert len(calls) == 2
    assert [len(f) for f in only[FACES_FOUND]] == [1, 1] and only.loc["big_small", FACES_FOUND][0]["subject"]
    assert only["eyes"].tolist() == out["eyes"].tolist()


def test_a_bundle_is_refused_before_anything_is_logged(store, members):
    """Seen to fail without the duplicate-column check (a second version was registered)."""
    before = len(registry.versions("faces"))
    with pytest.raises(FaceattrError, match="no registered model 'nose'"):
        bundling.make("faces", ["eyes", "nose"])
    with pytest.raises(ConfigError, match="named twice"):
        bundling.make("faces", ["eyes", "eyes"])
    _train("eyes", {"name": "eyes2"})   # a second model answering `eyes`
    with pytest.raises(ConfigError, match="'eyes2' and 'eyes' both answer `eyes`|'eyes' and 'eyes2' both answer"):
        bundling.make("faces", ["eyes", "eyes2"])
    mlflow.MlflowClient().create_registered_model("bare")
    with pytest.raises(FaceattrError, match="'bare'"):
        bundling.make("faces", ["bare"])
    assert len(registry.versions("faces")) == before


def test_a_bundle_is_promoted_while_its_members_are_champions(store, members, tmp_path):
    """Promoted while every member is its champion and answers alike; once a member's champion moves, the
    bundle is behind and a promotion refuses, naming it. Seen to fail with judge's champion check removed."""
    _, made = members
    root = shared_data("utkface-gender")
    policy_file = tmp_path / "faces.yaml"
    policy_file.write_text(yaml.safe_dump({"bundle": {"photos": str(root), "size": 4}}))
    policy = config.Policy.load("faces", policy_file)
    outcome = bundling.promote("faces", made.version, policy)
    assert outcome["promoted"] and outcome["reasons"] == [], outcome["reasons"]
    assert str(registry.champion("faces").version) == str(made.version)
    assert bundling.behind("mouth") == []
    moved = _train("mouth")
    assert bundling.behind("mouth") == ["faces"]
    refused = bundling.promote("faces", made.version, policy, dry_run=True)
    assert not refused["promoted"] and any("member mouth" in r and "no longer its champion" in r
                                           for r in refused["reasons"])
    renewed = bundling.make("faces", [])          # its last members, at their current champions
    assert bundling.pinned(renewed)["mouth"] == str(moved)


def test_faceattr_predict_writes_faces_found_as_json_text(store, members, tmp_path):
    """A table's cell holds JSON text (CSV here; Parquet and Spark alike), parsed back to the same faces.
    Seen to fail with answer_batch returning the lists (the CSV held Python's repr, not JSON)."""
    import json

    from faceattr.serving import batch

    _, made = members
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in photos().items():
        (folder / f"{name}.png").write_bytes(data)
    out = tmp_path / "preds.csv"
    batch.predict(str(folder), f"models:/faces/{made.version}", str(out), kind="photo", workers=1, progress=False)
    table = pd.read_csv(out).set_index(pd.read_csv(out)["path"].map(lambda p: p.rsplit("/", 1)[-1][:-4]))
    found = json.loads(table.loc["big_small", "pred_faces_found"])
    assert [f["subject"] for f in found] == [True, False] and json.loads(table.loc["none", "pred_faces_found"]) == []
    assert table.loc["big_small", "pred_eyes"] == pytest.approx(found[0]["eyes"])


def test_the_command_line_bundles_and_promotes(store, members, tmp_path, capsys):
    """`faceattr bundle NAME` (its last members) and `faceattr promote NAME` with a bundle policy; then
    `faceattr promote MEMBER` says the bundle fell behind. Seen to fail with cmd_promote's bundle branch
    removed (the bundle policy was read as a model's: "metric: missing")."""
    from faceattr import cli

    assert cli.main(["bundle", "faces"]) == 0
    out = capsys.readouterr().out
    assert "registered faces version" in out and "gender v" in out and "mouth v" in out
    policy = tmp_path / "faces.yaml"
    policy.write_text(yaml.safe_dump({"bundle": {"photos": str(shared_data("utkface-gender")), "size": 2}}))
    assert cli.main(["promote", "faces", "--policy", str(policy), "--dry-run"]) == 0
    assert "would be promoted (dry run)" in capsys.readouterr().out
    lax = tmp_path / "eyes.yaml"
    lax.write_text(yaml.safe_dump({"metric": "mse", "higher_is_better": False, "require_no_collapse": False}))
    newer = _train("eyes", {"seed": 5})   # the eyes champion moves on: the bundle holds the older one
    cli.main(["promote", "eyes", "--version", str(newer), "--policy", str(lax)])
    assert "bundle 'faces' holds an older eyes; `faceattr promote eyes --rebundle`" in capsys.readouterr().out


def test_a_member_that_cannot_be_served_whole_photos_is_refused(store, members, monkeypatch):
    """A member whose training crops the served cut cannot match (ready eye bands made elsewhere). Seen to
    fail with the photo_refusal check removed from bundling.make (the bundle was logged)."""
    from faceattr import promotion

    real = promotion.record_of

    def ready_crops(version):
        made = real(version)
        return made if version.name != "mouth" else made.model_copy(update={"crops": record.Crops(
            region="eyes", made_by="ready")})

    monkeypatch.setattr(promotion, "record_of", ready_crops)
    before = len(registry.versions("faces"))
    with pytest.raises(ConfigError, match="'mouth' version .* cannot be served whole photos"):
        bundling.make("faces", MEMBERS)
    assert len(registry.versions("faces")) == before


def test_a_bundle_whose_member_version_is_archived_or_deleted_is_refused(store, members, tmp_path):
    """Seen to fail with judge's archived and deleted checks removed (the refusal named only the champion)."""
    made = bundling.make("faces", [])
    pins = bundling.pinned(made)
    client = mlflow.MlflowClient()
    registry._transition("eyes", pins["eyes"], "Archived")
    client.delete_model_version("gender", pins["gender"])
    policy_file = tmp_path / "faces.yaml"
    policy_file.write_text(yaml.safe_dump({"bundle": {"photos": str(shared_data("utkface-gender")), "size": 2}}))
    outcome = bundling.promote("faces", made.version, config.Policy.load("faces", policy_file), dry_run=True)
    assert f"member eyes version {pins['eyes']} is archived" in outcome["reasons"]
    assert f"member gender version {pins['gender']} was deleted" in outcome["reasons"]
    assert not outcome["promoted"]
