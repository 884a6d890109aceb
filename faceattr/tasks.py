"""What differs between tasks, in one place: the regressions, the gender classifier, identity.

A task knows its targets and labels, its model's last layer and loss, its metrics and the one score
per photo that the collapse check and the served answer read, the served answer's columns, the
headline metrics a search and a promotion report, and its own config rules. The rest of faceattr
asks `tasks.of(config)` and never branches on a task's name; a new task is one class here plus one
YAML in experiments/. (Backbones, the other axis, live in faceattr/models.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from faceattr import evaluate
from faceattr.data.loading import gender_one_hot
from faceattr.data.manifest import GENDERS
from faceattr.data.splits import identity_split_names, split_names
from faceattr.features.face_descriptor import cosine_baseline_scores


@dataclass(frozen=True)
class Target:
    """What a model answers, as its experiment declares it (`target:` in experiments/NAME.yaml): the data
    sets' label column (also the served answer's column), the labels' range (refused outside it, answers
    clipped to it), the unit of an amount (`years`; None: a 0..1 score read at the middle of its range)
    and how the answer reads, in words. Manifest validation, the served columns, the headline metric and
    the smoke data follow from it."""
    column: str
    range: tuple[float, float] = (0.0, 1.0)
    unit: str | None = None
    reads: str = ""

    @classmethod
    def of(cls, declared) -> "Target":
        """A config's `target` (a mapping, or a bare column name) or a served model's settings."""
        if isinstance(declared, Target):
            return declared
        if isinstance(declared, str):
            return cls(declared)
        return cls(declared["column"], tuple(declared.get("range") or (0.0, 1.0)), declared.get("unit"),
                   declared.get("reads") or "")

    @property
    def is_score(self) -> bool:
        """A score (no unit) is read as yes / no at the middle of its range (eyes open, smiling)."""
        return self.unit is None

    @property
    def middle(self) -> float:
        return (self.range[0] + self.range[1]) / 2


@dataclass(frozen=True)
class Output:
    """The model's last layer: `units` outputs with `activation`, named `layer`."""
    units: int
    activation: str | None
    layer: str


class Task:
    name: str
    targets: tuple[str, ...]        # the label columns it can learn; empty: any its experiment declares
    target: Target | None = None    # the declared target of this experiment (`of`)
    output: Output
    loss: str
    compile_metrics: tuple[str, ...] = ()
    reads_gender = False            # the model's second input is [p_male, p_female]
    backbones: tuple[str, ...] = ("cnn",)   # the first is the default (models.BACKBONES)
    headline_metrics: tuple[str, ...]   # `headline` (a regression's follow its target)
    accuracy_key = "accuracy"       # the share of photos on the right side of 0.5
    balances_classes = False        # `train.balance` applies (class weights are logged)
    pooled_prefixes: tuple[str, ...] = ()   # metrics also reported over validation + test together
    identity_only_data = ("person", "unseen_share", "holdout")
    takes_person = False            # `data.person` and the deal's shares (identity_only_data) apply
    slice_metrics: tuple[str, ...]  # what each slice (a gender, an age band) reports (evaluate.slice_table)

    def labels(self, frame: pd.DataFrame, config: dict) -> np.ndarray:
        """What the model learns for these rows."""
        raise NotImplementedError

    def label_ranges(self) -> dict[str, tuple[float, float] | None]:
        """The label columns a data set must hold, each with the range its numbers must lie in (None: not
        a number, e.g. gender's male / female): what data/manifest.validate checks before any compute."""
        return {self.target.column: None}

    @property
    def headline(self) -> tuple[str, ...]:
        """What a search reports for its best trial and `faceattr train` prints (the first orders repeats)."""
        return self.headline_metrics

    def finish(self, model):
        """The built Keras model, with anything the task's output needs after the backbone's last layer."""
        return model

    def scores(self, outputs) -> np.ndarray:
        """The model's raw outputs -> one number per photo (what is served and collapse-checked)."""
        return np.asarray(outputs, np.float64).reshape(-1)

    def truth(self, labels) -> np.ndarray:
        """The labels on the scale of `scores`."""
        return np.asarray(labels, np.float64).reshape(-1)

    def metrics(self, scores, labels, frame: pd.DataFrame, train_labels, train_frame: pd.DataFrame,
                served: dict) -> dict:
        """`served`: the served model's settings (`calibrate`), e.g. identity's decision threshold."""
        raise NotImplementedError

    def calibrate(self, val_scores, val) -> dict:
        """Settings of the served answer chosen on the validation split once the model is fitted; the
        served model's record keeps them and every evaluation of the model uses them (none here)."""
        return {}

    # What `calibrate` gives a model logged before it chose anything on validation (record.read fills it in).
    served_before: dict = {}

    def baselines(self, split, train) -> dict:
        """Training-free baselines a model must beat, beside its metrics (the regressions' per-gender
        mean is part of their metrics)."""
        return {}

    def answer_columns(self, target: str) -> list[tuple[str, str]]:
        """(MLflow type, column) of the served answer."""
        raise NotImplementedError

    def mistakes(self, scores, labels, frame: pd.DataFrame, n: int, served: dict) -> list[tuple[int, str]]:
        """What the error gallery shows: up to `n` (row, caption) of the worst answers, worst first, by
        the decisions the model serves (`served`: its settings, see `calibrate`)."""
        raise NotImplementedError

    def mistakes_rule(self) -> str:
        """How `mistakes` chose the gallery's photos, in words (its title says so)."""
        raise NotImplementedError

    def loss_baseline(self, split, train) -> float | None:
        """The training-free baseline on the scale of the validation loss (a line on the learning curves)."""
        return None

    def answer(self, scores: np.ndarray, settings: dict) -> pd.DataFrame:
        """The served answer's columns from the scores, at the model's settings (ModelRecord.settings)."""
        raise NotImplementedError

    def check(self, config: dict, fail) -> None:
        """Task-specific config rules (`fail(key, why)` raises ConfigError)."""
        for key in self.identity_only_data:
            if config["data"][key] is not None:
                fail(f"data.{key}", "only the identity experiment takes a target person")

    def split(self, frame: pd.DataFrame, digests: list[str], images: np.ndarray, data: dict):
        """train/val/test per row (data.split), and extra manifest columns (none here)."""
        return split_names(data["split"], frame, images, digests), {}

    def class_weights(self, config: dict, labels) -> dict[int, float] | None:
        return None

    def served_settings(self, config: dict) -> dict:
        """What the served model must know besides its Keras model (identity: who it recognises)."""
        return {}

    def gender_source(self) -> str | None:
        """A fixed gender input source, or None: the regression's registered gender model / labels."""
        return None


class Regression(Task):
    """A declared target's value from a crop (or a face descriptor) and the gender probability (the seeds'
    background / eyes / mouth openness in 0..1; smiling, glasses; age in years)."""
    name = "regression"
    targets = ()
    # Linear: a sigmoid under MSE saturates on labels that are mostly 1.0 (eyes) and the model collapses
    # to a constant within the first epoch; the served value is clipped to the target's range (`scores`).
    output = Output(1, None, "dense_final")
    loss = "mse"
    reads_gender = True
    backbones = ("cnn", "dlib-resnet", "dlib-resnet-hog")
    headline_metrics = ("val_mse", "baseline_ratio")
    accuracy_key = "accuracy_at_0_5"
    slice_metrics_of_scores = ("mse", "mae", "baseline_ratio", "accuracy_at_0_5")

    @property
    def slice_metrics(self):
        scored = self.target is None or self.target.is_score
        return self.slice_metrics_of_scores if scored else self.slice_metrics_of_scores[:3]

    @property
    def headline(self):
        """An amount (age in years) is judged by its mean absolute error, in its unit."""
        return self.headline_metrics if self.target is None or self.target.is_score else ("val_mae", "baseline_ratio")

    def label_ranges(self):
        return {self.target.column: self.target.range}

    def labels(self, frame, config):
        return frame[self.target.column].to_numpy(np.float32)

    def finish(self, model):
        """A target other than 0..1 (age: 0..120 years) is learnt on the 0..1 scale and answered in its
        own: a fixed layer after the output maps 0..1 onto the range, so the loss' steps are the same size
        for every target and the Keras model itself answers years."""
        low, high = self.target.range
        if (low, high) == (0.0, 1.0):
            return model
        import keras

        scaled = keras.layers.Rescaling(high - low, offset=low, name="to_target_range")(model.outputs[0])
        return keras.Model(model.inputs, scaled, name=model.name)

    def scores(self, outputs):
        low, high = self.target.range if self.target else (0.0, 1.0)
        return np.clip(np.asarray(outputs, np.float64).reshape(-1), low, high)

    def metrics(self, scores, labels, frame, train_labels, train_frame, served):
        none = [None] * len(frame)
        return evaluate.regression_metrics(scores, labels, frame.get("gender", none), train_labels,
                                           train_frame.get("gender", [None] * len(train_frame)),
                                           decision=self.target.middle if self.target.is_score else None)

    def answer_columns(self, target):
        return [("double", target)]

    def mistakes(self, scores, labels, frame, n, served):
        """A score's gallery: the answers on the wrong side of the middle, the largest errors first (the
        mistakes `accuracy_at_0_5` counts: open read as closed, closed as open), among labels that have a
        side: a half-open eye labelled 0.5 is on neither, and a model answering 0.3 or 0.9 for it is right
        by that measure. An amount's gallery (age): the largest errors in its unit."""
        truth, target = self.truth(labels), self.target
        if target.is_score:
            sided = truth != target.middle
            rows = np.flatnonzero(sided & ((scores >= target.middle) != (truth >= target.middle)))
        else:
            rows = np.arange(len(truth))
        worst = rows[np.argsort(-np.abs(scores[rows] - truth[rows]), kind="stable")][:n]
        unit = f" {target.unit}" if target.unit else ""
        digits = 2 if target.is_score else 1
        return [(int(i), f"true {truth[i]:.{digits}f}{unit}\npredicted {scores[i]:.{digits}f}{unit}") for i in worst]

    def mistakes_rule(self):
        if self.target.is_score:
            return (f"answers on the wrong side of {self.target.middle:g}, largest error first "
                    f"(labels of exactly {self.target.middle:g} have no side and are left out)")
        return f"the largest errors in {self.target.unit}"

    def loss_baseline(self, split, train):
        """The per-gender-mean baseline's MSE over all validation rows: what val_loss (an MSE over rows) is."""
        none = [None] * len(split.frame)
        return evaluate.baseline(train.labels, train.frame.get("gender", [None] * len(train.frame)),
                                 split.labels, split.frame.get("gender", none))["baseline_mse_pooled"]

    def answer(self, scores, settings):
        return pd.DataFrame({self.target.column: scores})


class Gender(Task):
    """male / female from a face crop; its probabilities are the regressions' second input."""
    name = "classification"
    targets = ("gender",)
    output = Output(2, "softmax", "gender_probability")
    loss = "categorical_crossentropy"
    compile_metrics = ("accuracy",)
    backbones = ("cnn", "dlib-resnet")
    headline_metrics = ("val_accuracy",)
    slice_metrics = ("accuracy", "log_loss")

    def labels(self, frame, config):
        return gender_one_hot(frame)

    def scores(self, outputs):    # p(female)
        return np.asarray(outputs, np.float64)[:, 1]

    def truth(self, labels):
        return np.asarray(labels, np.float64)[:, 1]

    def metrics(self, scores, labels, frame, train_labels, train_frame, served):
        return evaluate.classification_metrics(np.stack([1 - scores, scores], axis=1), labels)

    def answer_columns(self, target):
        return [("double", "p_female"), ("string", "gender")]

    def answer(self, scores, settings):
        return pd.DataFrame({"p_female": scores, "gender": np.where(scores >= 0.5, *GENDERS[::-1])})

    def mistakes(self, scores, labels, frame, n, served):
        """Confident mistakes: wrong answers, the most certain first."""
        truth = self.truth(labels)
        wrong = np.flatnonzero((scores >= 0.5) != (truth >= 0.5))
        worst = wrong[np.argsort(-np.abs(scores[wrong] - 0.5), kind="stable")][:n]
        return [(int(i), f"true {GENDERS[int(truth[i] >= 0.5)]}\np(female) {scores[i]:.2f}") for i in worst]

    def loss_baseline(self, split, train):
        """The log loss of answering the training split's share of women for every photo."""
        share = float(np.mean(self.truth(train.labels)))
        truth = self.truth(split.labels)
        return evaluate.classification_metrics(np.tile([1 - share, share], (len(truth), 1)), split.labels)["log_loss"]

    def mistakes_rule(self):
        return "wrong answers, the most confident first"

    def gender_source(self):
        return "none (gender is the target)"


class Identity(Task):
    """"Is this photo person X?" (binary), evaluated apart on seen people and on people never seen."""
    name = "identity"
    targets = ("person",)
    output = Output(1, "sigmoid", "is_person")
    loss = "binary_crossentropy"
    compile_metrics = ("accuracy",)
    backbones = ("mobilenetv2", "vgg16", "dlib-resnet")
    headline_metrics = ("val_roc_auc", "val_accuracy")
    slice_metrics = ("accuracy", "roc_auc", "precision", "recall")
    balances_classes = True
    pooled_prefixes = ("seen_", "unseen_")   # few photos per split: judge people over both
    takes_person = True

    def labels(self, frame, config):
        return (frame["person"].astype(str) == str(config["data"]["person"])).to_numpy(np.float32)

    def metrics(self, scores, labels, frame, train_labels, train_frame, served):
        return evaluate.identity_metrics(scores, labels, frame["group"], self.threshold(served))

    def calibrate(self, val_scores, val):
        """The decision threshold, chosen on validation (evaluate.decision_threshold): a head trained on
        a few photos of one person scores strangers anywhere in (0, 1), so 0.5 is no more right than any
        other value."""
        return {"threshold": evaluate.decision_threshold(val_scores, np.asarray(val.labels) >= 0.5)}

    served_before = {"threshold": 0.5}   # the fixed threshold before it was chosen on validation

    @staticmethod
    def threshold(served: dict) -> float:
        """The served decision threshold (`calibrate`); before one is chosen (a model logged before
        thresholds were chosen on validation: record.read; a bare evaluation), the fixed one."""
        return float(served.get("threshold", Identity.served_before["threshold"]))

    def baselines(self, split, train):
        """With face descriptors: the ROC AUC of "cosine similarity to the mean descriptor of the target's
        training photos". A head that cannot beat it has learned nothing."""
        y = np.asarray(split.labels) >= 0.5
        if split.descriptors is None or train.descriptors is None or y.all() or not y.any():
            return {}
        target = train.descriptors[np.asarray(train.labels) >= 0.5]
        from sklearn.metrics import roc_auc_score

        return {"cosine_baseline_roc_auc": float(roc_auc_score(y, cosine_baseline_scores(target, split.descriptors)))}

    def answer_columns(self, target):  # P(the trained person), the decision at the served threshold, and who
        return [("double", "p_person"), ("boolean", "is_person"), ("string", "person")]

    def mistakes(self, scores, labels, frame, n, served):
        """False accepts at the served threshold (people never seen in training first: the failure a
        face check must not make), then false rejects of the target; half the gallery each when both
        have enough."""
        target, threshold = self.truth(labels) >= 0.5, self.threshold(served)
        unseen = (frame["group"] == "unseen").to_numpy()
        accepts = np.flatnonzero(~target & (scores >= threshold))
        accepts = accepts[np.lexsort((-scores[accepts], ~unseen[accepts]))]
        rejects = np.flatnonzero(target & (scores < threshold))
        rejects = rejects[np.argsort(scores[rejects], kind="stable")]
        take = max(n - len(rejects), (n + 1) // 2)
        chosen = [(i, "false accept" + (" (unseen)" if unseen[i] else "")) for i in accepts[:take]]
        chosen += [(i, "false reject") for i in rejects[:n - len(chosen)]]
        return [(int(i), f"{why}\np(person) {scores[i]:.2f}") for i, why in chosen]

    def mistakes_rule(self):
        return "false accepts at the served threshold (people never seen first), then false rejects"

    def answer(self, scores, settings):
        return pd.DataFrame({"p_person": scores, "is_person": scores >= self.threshold(settings),
                             "person": settings.get("person", "")})

    def check(self, config, fail):
        """The schema types each key (config.Data, config.Train); identity needs its deal's shares set."""
        data = config["data"]
        person = data["person"]
        if person is not None and not str(person).strip():
            fail("data.person", f"must be a person id from the data's `person` column, got {person!r}")
        if person is not None:
            data["person"] = str(person)  # -P person=7 arrives as the YAML int 7
        for key in ("unseen_share", "holdout"):
            if data[key] is None:
                fail(f"data.{key}", "missing: the identity task needs a number in (0, 1)")

    def split(self, frame, digests, images, data):
        data["person"], splits, groups = identity_split_names(frame, digests, data)
        return splits, {"group": groups}

    def class_weights(self, config, labels):
        """`train.balance: class_weight`: n / (2 n_class) per class (the target person is ~1 in 30
        photos), so both classes weigh the same in the loss."""
        if config["train"]["balance"] != "class_weight":
            return None
        labels = np.asarray(labels) >= 0.5
        n, positives = len(labels), int(labels.sum())
        if positives in (0, n):
            return None
        return {0: n / (2 * (n - positives)), 1: n / (2 * positives)}

    def served_settings(self, config):
        return {"person": str(config["data"]["person"])}

    def gender_source(self):
        return "unknown"


TASKS: dict[str, Task] = {task.name: task for task in (Regression(), Gender(), Identity())}


def of(config: dict) -> Task:
    """The task an experiment config (or a served model's settings) names, for the target it declares."""
    declared = config.get("target")
    if isinstance(declared, str):   # a served model's record (its settings), or a bare column name
        declared = {"column": declared, "range": config.get("target_range"), "unit": config.get("unit")}
    return _for_target(config["task"], Target.of(declared) if declared is not None else None)


@functools.lru_cache(maxsize=None)
def _for_target(task: str, target: Target | None) -> Task:
    """One task object per declared target (frozen, so a config read twice gets the same object)."""
    base = TASKS[task]
    copy = object.__new__(type(base))
    copy.__dict__.update(base.__dict__, target=target or (Target(base.targets[0]) if base.targets else None))
    return copy
