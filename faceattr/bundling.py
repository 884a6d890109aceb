"""`faceattr bundle NAME MODEL...`: register a bundle of champions, and judge one for promotion (issue 28).

A bundle version pins each member at the version that was its champion when the bundle was made (the
bundle's record, `bundle.json`, and the version tags `faceattr.member.<name>`); it carries their Keras
files, so it answers the same however the members move on. `registry/NAME.yaml` with a `bundle:` section
is a bundle policy: a bundle version is promoted when every member is still its model's champion and, on
the policy's whole photos, the bundle answers exactly as each member's own served model (within
`tolerance`).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from faceattr import config as config_module
from faceattr import names, promotion, registry, serving, tracking
from faceattr.data import manifest
from faceattr.errors import ConfigError, DataError
from faceattr.registry import RegistryError
from faceattr.data.faces import FACES
from faceattr.serving.bundle import member_columns
from faceattr.serving.model import ERROR

MEMBERS_TAG, MEMBER_TAG = names.BUNDLE_MEMBERS, names.BUNDLE_MEMBER   # + name: the member's pinned version


def make(name: str, models: list[str]) -> object:
    """Register a new version of bundle `name` holding the current champion of each of `models` (none:
    the members of its newest version). Everything is checked before anything is logged: an unknown
    model, one without a champion, one that cannot be served whole photos, two answering one column."""
    models = models or _last_members(name)
    if len(set(models)) < len(models):
        raise ConfigError(f"bundle {name!r}: a model is named twice ({', '.join(models)})")
    if name in models:
        raise ConfigError(f"bundle {name!r} cannot hold itself")
    members, owner = [], {}
    for model in models:
        version = registry.champion(model)
        if version is None:
            registry.versions(model)   # RegistryError naming an unknown model
            raise RegistryError(f"{model!r} has no champion to bundle: promote a version first "
                                f"(`faceattr promote {model}`)")
        made = promotion.record_of(version)
        if refusal := made.photo_refusal():
            raise ConfigError(f"{model!r} version {version.version} cannot be served whole photos: {refusal}")
        for column in member_columns(made):
            if column in owner:
                raise ConfigError(f"{model!r} and {owner[column]!r} both answer `{column}`: a bundle's columns "
                                  f"must be unique")
            owner[column] = model
        folder = registry.model_file(version, "artifacts")   # its Keras files and record, downloaded
        if folder is None or not (folder / names.RECORD).is_file():
            raise DataError(f"{model!r} version {version.version} carries no {names.RECORD} (logged before the "
                            f"record): retrain it to bundle it")
        members.append({"name": model, "version": str(version.version), "record": made,
                        "source": f"models:/{model}/{version.version}", "folder": str(folder)})
    tracking.use_experiment(name)
    with tracking.start_run(f"{name}-bundle", tags={MEMBERS_TAG: ",".join(models)}) as run:
        info = run.log_bundle(members, _example())
        registered = run.register_model(info.model_uri, name)
    registry.record(name, registered.version, {MEMBERS_TAG: ",".join(models),
                                               **{MEMBER_TAG + m["name"]: m["version"] for m in members}})
    return registry.get_version(name, registered.version)   # with its tags


def _last_members(name: str) -> list[str]:
    newest = registry.get_version(name, None)
    found = (newest.tags or {}).get(MEMBERS_TAG)
    if not found:
        raise ConfigError(f"{name!r} version {newest.version} is not a bundle: name its models "
                          f"(`faceattr bundle {name} MODEL [MODEL ...]`)")
    return found.split(",")


def _example() -> pd.DataFrame:
    """A request row: one whole synthetic photo (the bundle's input example)."""
    from faceattr.data import synthetic

    photo = synthetic.default_dataset(size=10).parent / "images" / "00000.png"
    return pd.DataFrame([{"image": photo.read_bytes(), "kind": "photo"}])


def pinned(version) -> dict[str, str]:
    """{member: version} a bundle version pins (its tags)."""
    tags = version.tags or {}
    return {m: tags[MEMBER_TAG + m] for m in tags.get(MEMBERS_TAG, "").split(",") if m}


def behind(member: str) -> list[str]:
    """The bundles whose newest version pins `member` at another version than its champion."""
    now = registry.champion(member)
    out = []
    for name in registry.registered_names():
        try:
            pins = pinned(registry.get_version(name, None))
        except RegistryError:   # a registered model without versions
            continue
        if member in pins and (now is None or pins[member] != str(now.version)):
            out.append(name)
    return out


def judge(name: str, version, policy: config_module.BundlePolicy) -> list[str]:
    """Why bundle `version` must not be promoted (empty: it may): a member no longer its model's champion
    (or deleted / archived), or an answer that differs from the member's own on the policy's photos."""
    reasons, pins = [], pinned(version)
    if not pins:
        return [f"{name!r} version {version.version} pins no members: it is not a bundle"]
    for member, pinned_version in pins.items():
        try:
            found = registry.get_version(member, pinned_version)
        except RegistryError:
            reasons.append(f"member {member} version {pinned_version} was deleted")
            continue
        if found.current_stage == "Archived":
            reasons.append(f"member {member} version {pinned_version} is archived")
        champion = registry.champion(member)
        if champion is None or str(champion.version) != pinned_version:
            reasons.append(f"member {member} version {pinned_version} is no longer its champion "
                           f"({'none' if champion is None else 'version ' + str(champion.version)})")
    if reasons:
        return reasons
    photos = manifest.read_data_set(policy.bundle.photos)["path"].tolist()[:policy.bundle.size]
    rows = pd.DataFrame({"image": [open(p, "rb").read() for p in photos], "kind": "photo"})
    bundled = serving.load(f"models:/{name}/{version.version}").predict(None, rows, {"faces": "subject"})
    for member, pinned_version in pins.items():
        own = serving.load(f"models:/{member}/{pinned_version}").predict(None, rows)
        columns = [c for c in own.columns if c in bundled.columns and c not in (FACES, ERROR)]
        reasons += differences(member, own, bundled, columns, policy.bundle.tolerance, photos)
    return reasons


def differences(member: str, own: pd.DataFrame, bundled: pd.DataFrame, columns: list[str], tolerance: float,
                photos: list) -> list[str]:
    """Where the bundle's answer differs from `member`'s own (numbers by more than `tolerance`): a photo
    the member refuses must be refused by the bundle too, and one it answers answered alike."""
    out = []
    for i in range(len(own)):
        refused = own[ERROR].iloc[i] not in (None, "")
        if refused and bundled[ERROR].iloc[i] in (None, ""):
            out.append(f"{member}: the bundle answered {photos[i]}, which {member} refuses ({own[ERROR].iloc[i]})")
        for column in [] if refused else columns:
            a, b = own[column].iloc[i], bundled[column].iloc[i]
            numbers = isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number))
            if not (abs(float(a) - float(b)) <= tolerance if numbers else a == b):
                out.append(f"{member}: `{column}` of {photos[i]} is {b!r} in the bundle, {a!r} served alone")
    return out[:10]


def promote(name: str, version: str | None, policy: config_module.BundlePolicy, dry_run: bool = False) -> dict:
    """Judge bundle `name`'s version (the newest by default) and, when it passes, make it the champion."""
    found = registry.get_version(name, version)
    reasons = judge(name, found, policy)
    if not reasons and not dry_run:
        with registry.promotion_lock(name):
            registry.repair(name)
            registry.record(name, found.version, {names.DECIDED_AT: registry.now(), names.DECIDED_BY: registry.who()})
            registry.move_champion(name, found.version)
    return {"model": name, "version": str(found.version), "promoted": not reasons and not dry_run,
            "reasons": reasons, "members": pinned(found)}


def summary(outcome: dict) -> str:
    members = ", ".join(f"{m} v{v}" for m, v in outcome["members"].items())
    if outcome["reasons"]:
        return f"bundle version {outcome['version']} ({members}) refused: " + "; ".join(outcome["reasons"])
    verb = "promoted to champion" if outcome["promoted"] else "would be promoted (dry run)"
    return f"bundle version {outcome['version']} ({members}) {verb}"


def dumps(outcome: dict) -> str:
    return json.dumps(outcome, default=str)
