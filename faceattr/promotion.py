"""Promotion: does a registered version replace the champion (stage Production + alias `champion`)?

Policy: `registry/<model>.yaml` (see registry/README.md). The challenger and the champion are both
evaluated afresh, through the served code path (FaceattrModel.predict_arrays), on the same held-out
rows: the `test` split of the data set the challenger was trained on (splits are fixed by the data:
by person or file content, so no model trained on any set built from the same files has seen them),
or of `eval_data`.
Whole photos (`eval_photos`, or the policy's `photos:`): a labelled set of whole photos sent to the
challenger as `kind=photo` through the served model (what `mlflow models serve` answers), so a model that
reads its training crops well but whole photos badly (a crop it never saw: issue 16) cannot become the
champion; a model that refuses whole photos (regions.photo_refusal) fails that gate.
Each decision is an MLflow run in experiment `promote-<model>` and tags + a description on the version.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from faceattr import config as config_module
from faceattr import evaluate, names, record, registry, serving, tasks, tracking
from faceattr.data import manifest
from faceattr.data.loading import (unknown_gender, Split, gender_one_hot, has_gender_labels, make_split, open_data,
                                   shows_faces)
from faceattr.errors import ConfigError, DataError
from faceattr.gender_input import rows_gender

REFUSED = 3           # exit code of a refused promotion (config/data/registry errors are 2)


# --- policy -----------------------------------------------------------------------------------

Policy = config_module.Policy   # registry/<model>.yaml: its schema, loading and params (faceattr/config.py)


@dataclass
class Decision:
    promote: bool
    reasons: list[str]                    # why not (empty when promoted)
    evidence: list[str] = field(default_factory=list)   # what was compared


def decide(policy: Policy, challenger: dict, champion: dict | None, slices: dict | None = None,
           trained: dict | None = None) -> Decision:
    """Pure policy: absolute thresholds, the slices, the collapse check, then the margin over the
    champion (if any).

    `challenger`/`champion`: metrics of a fresh evaluation, with `collapsed` (bool) among them.
    `slices`: the challenger's gated slices of `policy.slices.metric`, {(column, slice): (value, n)}
    (`training_slices`). `trained`: the challenger's training-run metrics (the baseline rule reads them).
    """
    reasons, evidence = [], []
    if policy.baseline:
        reasons += baseline_reasons(policy.baseline, trained or {}, evidence)
    if policy.slices:
        reasons += slice_reasons(policy.slices, slices or {})
    if challenger.get("photos_refusal"):
        reasons.append(f"whole photos refused: {challenger['photos_refusal']}")
    for key, bound in {**policy.thresholds, **policy.photo_thresholds}.items():
        value = challenger.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            reasons.append(f"{key} is missing from the evaluation")
            continue
        if bound.min is not None and not value >= bound.min:
            reasons.append(f"{key} {value:.4g} is below the minimum {bound.min}")
        if bound.max is not None and not value <= bound.max:
            reasons.append(f"{key} {value:.4g} is above the maximum {bound.max}")
    if policy.require_no_collapse and challenger.get(names.COLLAPSED):
        reasons.append(f"collapsed: its outputs spread only {challenger.get('collapse_std_ratio', float('nan')):.3g} "
                       f"of the labels' spread")
    metric = policy.metric
    mine = challenger[metric]
    if not math.isfinite(mine):
        reasons.append(f"{metric} is {mine}: the model's outputs are not finite numbers")
    if champion is None:
        evidence.append(f"no champion: first version judged on the thresholds alone ({metric} {mine:.4g})")
    else:
        theirs = champion[metric]
        need = abs(theirs) * policy.margin.relative + policy.margin.absolute
        target = theirs + need if policy.higher_is_better else theirs - need
        beats = mine >= target if policy.higher_is_better else mine <= target
        if policy.higher_is_better and need == 0:
            beats = mine > theirs
        elif not policy.higher_is_better and need == 0:
            beats = mine < theirs
        word = "higher" if policy.higher_is_better else "lower"
        evidence.append(f"{metric} {mine:.4g} vs champion's {theirs:.4g} (needed {target:.4g} or {word})")
        if not beats:
            reasons.append(f"{metric} {mine:.4g} does not beat the champion's {theirs:.4g} by the margin "
                           f"({policy.margin.relative:.1%} relative + {policy.margin.absolute:g}): needed "
                           f"{target:.4g} or {word}")
    return Decision(not reasons, reasons, evidence)


def slice_reasons(rule: config_module.SliceRule, slices: dict) -> list[str]:
    """Why the slices fail `rule` (min_worst / max_worst over all gated slices, max_gap within a column);
    each reason names the slice."""
    metric = rule.metric
    if not slices:
        return [f"{metric} has no gated slice in the training run (none with evaluation.min_slice photos)"]
    def named(key):
        value, n = slices[key]
        return f"{key[0]}={key[1]} ({value:.4g}, n={n})"
    reasons = []
    lowest, highest = min(slices, key=lambda k: slices[k][0]), max(slices, key=lambda k: slices[k][0])
    if rule.min_worst is not None and not slices[lowest][0] >= rule.min_worst:
        reasons.append(f"{metric} of the worst slice {named(lowest)} is below the minimum {rule.min_worst}")
    if rule.max_worst is not None and not slices[highest][0] <= rule.max_worst:
        reasons.append(f"{metric} of the worst slice {named(highest)} is above the maximum {rule.max_worst}")
    if rule.max_gap is not None:
        for column in sorted({c for c, _ in slices}):
            mine = {k: v for k, v in slices.items() if k[0] == column}
            low, high = min(mine, key=lambda k: mine[k][0]), max(mine, key=lambda k: mine[k][0])
            gap = mine[high][0] - mine[low][0]
            if gap > rule.max_gap:
                reasons.append(f"{metric} differs by {gap:.4g} between slices {named(high)} and {named(low)}: "
                               f"above the maximum gap {rule.max_gap}")
    return reasons


def baseline_reasons(rule, trained: dict, evidence: list) -> list[str]:
    """Why the model does not beat the baseline (`rule`: config.BaselineRule) in its training run's
    metrics: overall and per slice wherever both were logged (`<baseline>.slice.set.<name>` beside
    `<metric>.slice.set.<name>`); the comparisons made go to `evidence`."""
    metric, baseline = rule.metric, rule.baseline
    pairs = [(metric + name[len(baseline):], name) for name in sorted(trained) if name.startswith(baseline)
             and (name == baseline or name.startswith(baseline + evaluate.SLICE_MARK))]
    pairs = [(mine, theirs) for mine, theirs in pairs if mine in trained]
    if not pairs:
        return [f"{metric} cannot be compared with the baseline {baseline}: the training run logged no pair of them"]
    reasons = []
    for mine, theirs in pairs:
        evidence.append(f"{mine} {trained[mine]:.4g} vs {theirs} {trained[theirs]:.4g}")
        if not trained[mine] > trained[theirs]:
            reasons.append(f"{mine} {trained[mine]:.4g} does not beat the training-free {theirs} {trained[theirs]:.4g}")
    return reasons


def training_run(version):
    """The run that trained `version` (a read through the tracking door), or None."""
    return tracking.get_run(version.run_id) if version.run_id else None


def training_metrics(version) -> dict:
    """The metrics the version's training run logged."""
    run = training_run(version)
    return dict(run.data.metrics) if run else {}


def training_slices(version, metric: str) -> dict:
    """The gated slices of `metric` (e.g. val_accuracy) the version's training run logged:
    {(column, slice): (value, photos)}. Only gated slices carry the metric (views.show)."""
    found = training_metrics(version)
    split = "test" if metric.startswith("test_") else "val"
    prefix = metric + evaluate.SLICE_MARK    # "val_accuracy.slice."
    out = {}
    for name, value in found.items():
        if name.startswith(prefix):
            column, _, slice_name = name[len(prefix):].partition(".")
            photos = found.get(evaluate.slice_metric_name(evaluate.metric_name(split, "photos"), column, slice_name))
            out[(column, slice_name)] = (value, int(photos or 0))
    return out


# --- evaluation -------------------------------------------------------------------------------

@dataclass
class EvalSet:
    config: dict
    name: str
    digest: str
    test: Split            # the held-out rows, judged
    train: Split           # the training rows: the baseline's means


def training_config(version, eval_data: str | None = None) -> dict:
    """The experiment config a version was trained with (its run's config.json: tracking.run_config),
    data overridable."""
    run = training_run(version)
    if run is None:
        raise DataError(f"version {str(version.version)} of {version.name!r} has no training run to recover its data "
                        f"from; pass --eval-data")
    cfg = tracking.run_config(run)
    if eval_data:
        cfg["data"]["source"] = eval_data
        cfg["data"]["folders"] = None
    return cfg


def eval_set(cfg: dict, versions=()) -> EvalSet:
    """The held-out test rows of the data set `cfg` names (and its training rows, for the baseline), with
    what the models of `versions` read computed from them (their records' input kinds, models/inputs.py):
    a model reading face descriptors is judged on the photos with a usable face, and so is its rival."""
    task = tasks.of(cfg)
    data, found = open_data(cfg, task), {}
    for kind in {record_of(version).kind for version in versions}:
        data, computed, _ = kind.of_data(data, cfg["region"], progress=False)
        found.update(computed)   # only the face descriptor kinds compute anything (and keep the photos they read)
    if len(data.rows("test")) == 0:
        raise DataError(f"{cfg['data']['source']}: the test split is empty: nothing to evaluate on; use more images")
    labels = task.labels(data.frame, cfg)
    no_gender = unknown_gender(len(data.frame))
    return EvalSet(cfg, data.name, data.digest, make_split(data, "test", labels, no_gender, found),
                   make_split(data, "train", labels, no_gender, found))


def judge_version(version, data: EvalSet, collapse_threshold: float) -> dict:
    """Fresh metrics of one registered version on `data`, through the served model's predict path,
    with the gender input it was trained with: its bundled gender model, the labels, or unknown."""
    served = serving.load(f"models:/{version.name}/{str(version.version)}")
    test, task = data.test, tasks.of(data.config)
    gender = None
    if task.reads_gender:
        run = training_run(version)
        source = run.data.params.get(names.GENDER_SOURCE, "") if run else ""
        if served.gender_model is not None and shows_faces(test.frame):
            gender = rows_gender(served.gender_model, test.frame)
        elif source == "labels" and has_gender_labels(test.frame):
            gender = gender_one_hot(test.frame)
    inputs = served.record.kind.of_split(test)
    return evaluate.evaluate(task, served.scores(inputs, gender), test, data.train, collapse_threshold,
                             served.record.settings)


def photo_set(source: str, cfg: dict) -> pd.DataFrame:
    """The labelled whole photos of `source` (a manifest or folder), validated before anything is scored."""
    return manifest.load_dataset(source, targets=tasks.of(cfg).label_ranges(), region="photo", image_region="photo")


def held_out_photos(data: EvalSet) -> pd.DataFrame:
    """The whole photos in the test split of the sets the model trained on (one row a photo, however
    many cuts it gave): splits are fixed by person or content, so no training run saw them."""
    frame = data.test.frame
    return frame[frame["image_region"] == "photo"].drop_duplicates("path").reset_index(drop=True)


def judge_photos(version, frame: pd.DataFrame, cfg: dict) -> dict:
    """Whole-photo metrics of one version: every photo of `frame` (whole photos labelled with the
    model's target: photo_set, held_out_photos) sent as `kind=photo` through the served model
    (FaceattrModel.read + answer_photos, what the server runs), the bundled gender model reading faces.

    photos_n; photos_scored_share (photos it answered: no face or several faces count against it);
    photos_accuracy (on the label's side of 0.5), photos_caught and photos_false_alarms (config.PHOTO_METRICS)
    and photos_mae over the answered ones, each also per set (`photos_accuracy.set.yawn-whole`) when the
    photos come from several; or photos_refusal (the reason) when the model refuses whole photos."""
    task = tasks.of(cfg)
    served = serving.load(f"models:/{version.name}/{str(version.version)}")
    out = {"photos_n": len(frame)}
    refusal = served.record.photo_refusal()
    if refusal:
        return {**out, "photos_scored_share": 0.0, "photos_refusal": refusal}
    from faceattr.serving.batch import ANSWER_PREFIX, score

    scored, _ = score(served, pd.DataFrame({"path": frame["path"], "kind": "photo"}), progress=False)
    column = task.answer_columns(task.target.column)[0][1]   # the task's score: the value, p_female, p_person
    answers = pd.to_numeric(scored[ANSWER_PREFIX + column].where(scored["error"].isna()), errors="coerce")
    truth = pd.Series(task.truth(task.labels(frame, cfg)), index=answers.index)
    sets = frame["set"].to_numpy() if "set" in frame and frame["set"].nunique() > 1 else None
    return {**out, **photo_figures(task, answers, truth, sets)}


def photo_figures(task, answers: pd.Series, truth: pd.Series, sets: np.ndarray | None = None) -> dict:
    """judge_photos' figures of photos whose served score is `answers` (NaN: not answered) and label
    `truth`: over them all, and per set (`photos_caught.set.yawn-whole`) when `sets` names each one's."""
    out = _photo_figures(task, answers, truth)
    for name in ([] if sets is None else sorted(set(sets))):
        mine = sets == name
        out.update({f"{key}{config_module.PER_SET}{name}": value
                    for key, value in _photo_figures(task, answers[mine], truth[mine]).items()})
    return out


def _photo_figures(task, answers: pd.Series, truth: pd.Series) -> dict:
    answered = answers.notna().to_numpy()
    out = {"photos_scored_share": float(answered.mean())}
    if not answered.any():
        return out
    found, truth = answers[answered].to_numpy(float), truth[answered].to_numpy(float)
    out["photos_mae"] = float(np.mean(np.abs(found - truth)))
    if task.target.is_score:   # an amount (age in years) has no side: its MAE judges it
        middle = task.target.middle
        said = found >= middle
        out["photos_accuracy"] = float(np.mean(said == (truth >= middle)))
        for key, side in (("photos_caught", truth > middle), ("photos_false_alarms", truth < middle)):
            if side.any():   # a label of exactly the middle is on neither side
                out[key] = float(np.mean(said[side]))
    return out


def record_of(version) -> record.ModelRecord:
    """What a version's model is and reads: the record its logged model carries (faceattr/record.py;
    `spec.json` in models logged before the record)."""
    for name in (names.RECORD, names.SPEC):
        path = registry.model_file(version, f"artifacts/{name}")
        if path is not None:
            return record.read(json.loads(path.read_text()), f"version {version.version} of {version.name!r}: {name}")
    raise DataError(f"version {version.version} of {version.name!r}: its logged model has no {names.RECORD}")


# --- the commands -----------------------------------------------------------------------------

@dataclass
class Result:
    action: str               # promoted | refused | would-promote | would-refuse | already-champion | rolled-back
    version: str
    champion: str | None
    decision: Decision | None
    run_id: str
    repaired: list[str]
    challenger_metrics: dict = field(default_factory=dict)
    champion_metrics: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return REFUSED if self.action in ("refused", "would-refuse") else 0

    def summary(self) -> str:
        head = {"promoted": f"promoted version {self.version} to Production/@champion",
                "refused": f"refused version {self.version}: nothing moved",
                "would-promote": f"dry run: version {self.version} would be promoted (nothing moved)",
                "would-refuse": f"dry run: version {self.version} would be refused (nothing moved)",
                "already-champion": f"version {self.version} is already the champion: nothing to do",
                "rolled-back": f"rolled back: version {self.version} is the champion again "
                               f"(replacing {self.champion})"}[self.action]
        lines = [head, *(f"  fixed first: {r}" for r in self.repaired)]
        if self.decision:
            lines += [f"  evidence: {e}" for e in self.decision.evidence]
            lines += [f"  reason: {r}" for r in self.decision.reasons]
        lines.append(f"  MLflow run {self.run_id}")
        return "\n".join(lines)


def promote(model: str, version: str | None = None, *, dry_run: bool = False, eval_data: str | None = None,
            policy: Policy | None = None, eval_photos: str | None = None) -> Result:
    """Judge `version` (default: the newest) against the champion and move both records if it wins.
    `eval_photos`: labelled whole photos the challenger is also judged on (default: the policy's)."""
    policy = policy or Policy.load(model)
    photos = eval_photos or (policy.photos.data if policy.photos else None)
    held_out = bool(policy.photos and policy.photos.held_out)
    if policy.photo_thresholds and not photos and not held_out:
        raise ConfigError(f"the policy of {model!r} sets photos.thresholds but names no photos: add "
                          f"photos.data to it or pass --eval-photos PATH")
    with registry.promotion_lock(model):
        repaired = [] if dry_run else registry.repair(model)
        challenger = registry.get_version(model, version)
        current = registry.champion(model)
        with _audit_run(model, "promote", str(challenger.version)) as run:
            if current is not None and str(current.version) == str(challenger.version):
                _log(run, {"decision": "already-champion"}, {}, {})
                return Result("already-champion", str(challenger.version), str(current.version), None,
                              run.run_id, repaired)
            cfg = training_config(challenger, eval_data)
            readers = [challenger] + ([current] if current is not None else [])
            data = eval_set(cfg, readers)
            threshold = policy.collapse_threshold or cfg["evaluation"]["collapse_threshold"]
            mine = judge_version(challenger, data, threshold)
            if photos or held_out:
                frame = photo_set(photos, cfg) if photos else held_out_photos(data)
                photos = photos or f"held out: {len(frame)} whole photos of the test split of {data.name}"
                mine.update(judge_photos(challenger, frame, cfg))
            theirs = judge_version(current, data, threshold) if current is not None else None
            slices = training_slices(challenger, policy.slices.metric) if policy.slices else None
            decision = decide(policy, mine, theirs, slices, training_metrics(challenger) if policy.baseline else None)
            action = ("would-" if dry_run else "") + ("promote" if decision.promote else "refuse")
            action = {"promote": "promoted", "refuse": "refused"}.get(action, action)
            params = {"model": model, "challenger_version": str(challenger.version), "dry_run": str(dry_run),
                      "champion_version": str(current.version) if current else "none",
                      "eval.data": data.name, "eval.digest": data.digest, "eval.rows": str(len(data.test)),
                      "eval.source": str(cfg["data"]["source"]), "eval.photos": str(photos or "none"),
                      **policy.as_params()}
            metrics = {f"challenger_{k}": float(v) for k, v in mine.items() if not isinstance(v, str)}
            if theirs:
                metrics.update({f"champion_{k}": float(v) for k, v in theirs.items()})
            tags = {"decision": action, "reasons": "; ".join(decision.reasons) or "-",
                    "evidence": "; ".join(decision.evidence)}
            _log(run, tags, params, metrics)
            result = Result(action, str(challenger.version), str(current.version) if current else None, decision,
                            run.run_id, repaired, mine, theirs or {})
            if dry_run:
                return result
            stamp = {names.DECIDED_AT: registry.now(), names.DECIDED_BY: registry.who(),
                     names.PROMOTE_RUN: run.run_id, names.DECISION: action,
                     names.EVAL_DATA: f"{data.name} ({data.digest}, {len(data.test)} test rows)",
                     names.PREFIX + policy.metric: f"{mine[policy.metric]:.6g}"}
            if theirs:
                stamp[names.PREFIX + "champion_" + policy.metric] = f"{theirs[policy.metric]:.6g}"
            by = f"by {stamp[names.DECIDED_BY]} at {stamp[names.DECIDED_AT]}, run {run.run_id}"
            if decision.promote:
                stamp[registry.PREVIOUS] = str(current.version) if current else "none"
                stamp[names.BEAT_CHAMPION] = str(current.version) if current else "none (first champion)"
                registry.record(model, str(challenger.version), {**stamp, names.REASONS: "-"},
                                f"Promoted {by}: {'; '.join(decision.evidence)}")
                registry.move_champion(model, str(challenger.version))
            else:
                registry.record(model, str(challenger.version), {**stamp, names.REASONS: "; ".join(decision.reasons)},
                                f"Refused {by}: {'; '.join(decision.reasons)} ({'; '.join(decision.evidence)})")
            return result


def rollback(model: str) -> Result:
    """Move Production and @champion back to the champion the current one replaced (tag chain)."""
    with registry.promotion_lock(model):
        repaired = registry.repair(model)
        current = registry.champion(model)
        if current is None:
            raise registry.RegistryError(f"{model!r} has no champion: nothing to roll back")
        previous = current.tags.get(registry.PREVIOUS, "none")
        if previous == "none":
            raise registry.RegistryError(f"version {str(current.version)} of {model!r} was the first champion "
                                         f"(tag {registry.PREVIOUS} is none): nothing to roll back to")
        target = registry.get_version(model, previous)
        with _audit_run(model, "rollback", str(target.version)) as run:
            _log(run, {"decision": "rolled-back", "reasons": f"rollback requested by {registry.who()}"},
                 {"model": model, "from_version": str(current.version), "to_version": str(target.version)}, {})
            by = f"by {registry.who()} at {registry.now()}, run {run.run_id}"
            registry.record(model, str(current.version), {names.ROLLED_BACK: by})
            registry.record(model, str(target.version), {names.RESTORED: f"replacing version {str(current.version)} {by}"},
                            f"Champion again after a rollback of version {str(current.version)} {by}")
            registry.move_champion(model, str(target.version))
            return Result("rolled-back", str(target.version), str(current.version), None, run.run_id, repaired)


def history(model: str) -> list:
    """Every promotion decision and rollback of `model`, oldest first: their audit runs (tags
    `faceattr.action`, `faceattr.decision`, `faceattr.reasons`; params `challenger_version` and
    `champion_version`, or a rollback's `from_version` and `to_version`); none when there were none."""
    experiment_id = tracking.find_experiment(audit_experiment(model))
    return tracking.find_runs(experiment_id, "") if experiment_id else []


def audit_experiment(model: str) -> str:
    """The MLflow experiment holding the promotion decisions of `model`."""
    return f"promote-{model}"


def _audit_run(model: str, action: str, version: str):
    """The decision's run in experiment `promote-<model>` (tracking.audit_run)."""
    return tracking.audit_run(audit_experiment(model), f"{action}-{model}-v{version}",
                              {names.ACTION: action, names.MODEL_NAME: model, names.USER: registry.who()},
                              link_tag=names.PROMOTE_RUN, record=names.PROMOTION)


def _log(run, tags: dict, params: dict, metrics: dict) -> None:
    run.log({names.PREFIX + k if k in ("decision", "reasons", "evidence") else k: v for k, v in tags.items()},
            params, metrics)


def dumps(result: Result) -> str:
    return json.dumps({"action": result.action, "version": result.version, "champion": result.champion,
                       "run_id": result.run_id}, sort_keys=True)
