"""What a training run shows a person besides its headline figures, logged into the run:

- `plots/learning_curves.png` (with the baseline's validation loss and the learning-rate cuts),
  `plots/predicted_vs_true.png` (coloured by gender), `plots/error_gallery.png` (the validation photos
  the model gets most wrong, as it saw them; `evaluation.gallery: 0` leaves the photos out of the store);
- slices: the task's metrics per gender and per `evaluation.slices` column on validation and test, as
  metrics (`val_accuracy.slice.gender.female` for slices of at least `evaluation.min_slice` photos,
  `val_photos.slice.gender.female` for all) and the table `slices.json` (every slice);
- regressions: how far the answers move with the gender input against the photo (`gender_weight_swap`,
  `gender_weight_unknown`, `photo_weight_shuffle`, tag `leans_on_gender`), on validation.

Everything reads the validation and test photos the run already holds; nothing here changes a metric
the run is judged by.
"""

from __future__ import annotations

import numpy as np

from faceattr import evaluate, plots, tasks, tracking, train
from faceattr.data.loading import Split
from faceattr.data.manifest import GENDERS
# What a run logs here, by name (faceattr/report.py reads them back)
from faceattr.names import GALLERY, LEANS_ON_GENDER, LEARNING_CURVES, PREDICTED_VS_TRUE, SLICES


def show(run: tracking.Run, model, config: dict, splits: dict[str, Split], found: dict[str, np.ndarray],
         history: dict, served: dict) -> tuple[list[dict], dict[str, float], dict[str, str]]:
    """Log the run's views; return what was logged: the slice rows, the metrics and the tags.
    `found`: the scores of each judged split, `served`: the served model's settings (experiment.assess),
    so slices and mistakes are judged by the decisions the model serves."""
    task, evaluation = tasks.of(config), config["evaluation"]
    train, val = splits["train"], splits["val"]
    rows, metrics = [], {}
    for name, scores in found.items():
        labels = evaluate.slice_labels(splits[name].frame, evaluation["slices"])
        table = evaluate.slice_table(task, scores, splits[name], train, name, labels, evaluation["min_slice"], served)
        rows += table
        metrics.update(_slice_metrics(table))
    tags = {}
    if task.reads_gender:
        weights = evaluate.gender_weight(lambda main, gender: _predict(model, config, val, main, gender),
                                         val.model_input[1], val.gender, _gender_groups(val), config["train"]["seed"])
        metrics.update(weights)
        tags[LEANS_ON_GENDER] = str(evaluate.leans_on_gender(weights)).lower()
    tracking.log_slices(run, rows, metrics, SLICES)
    run.set_tags(tags)
    figures = {LEARNING_CURVES: plots.learning_curves(history, task.loss_baseline(val, train)),
               PREDICTED_VS_TRUE: plots.predicted_vs_true(
                   task.truth(val.labels), found["val"], val.frame.get("gender"), task.target.column)}
    if evaluation["gallery"]:
        chosen = task.mistakes(found["val"], val.labels, val.frame, evaluation["gallery"], served)
        figures[GALLERY] = plots.error_gallery(
            [val.images[i] for i, _ in chosen], [caption for _, caption in chosen],
            f"{config['name']}: the validation photos it gets most wrong: {task.mistakes_rule()}")
    tracking.log_figures(run, figures)
    return rows, metrics, tags


def _slice_metrics(table: list[dict]) -> dict[str, float]:
    """Each slice's photo count, and the metrics of each gated slice, as MLflow metrics named like the
    run's own (`val_accuracy`, `test_mse`, `baseline_ratio`) plus `.slice.<column>.<slice>`. A slice
    too small to gate shows its metrics in slices.json only, so a policy reading the run's metrics
    judges exactly the gated slices."""
    out = {}
    for row in table:
        for key, value in row.items():
            if key in ("split", "column", "slice", "gated") or not np.isfinite(value):
                continue
            if key != "n" and not row["gated"]:
                continue
            metric = evaluate.metric_name(row["split"], "photos" if key == "n" else key)
            out[evaluate.slice_metric_name(metric, row["column"], row["slice"])] = float(value)
    return out


def _predict(model, config: dict, split: Split, main: np.ndarray, gender: np.ndarray) -> np.ndarray:
    """The task's scores with the model's main input (crops or descriptors) and gender input replaced."""
    inputs = {split.model_input[0]: np.asarray(main, np.float32), "gender": np.asarray(gender, np.float32)}
    return train.scores(model, config, inputs)


def _gender_groups(split: Split) -> np.ndarray:
    """Who counts as the same gender when photos are shuffled: the label, else the gender input's side."""
    if "gender" in split.frame and split.frame["gender"].isin(GENDERS).all():
        return split.frame["gender"].to_numpy(object)
    return np.asarray(GENDERS, object)[np.asarray(split.gender).argmax(1)]
