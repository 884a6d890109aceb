"""Fit a model the seeds' way: Adam, learning rate cut 10x on plateau, early stopping to the best weights."""

from __future__ import annotations

import ctypes
import gc
import sys

import keras
import numpy as np

from faceattr import models, tasks
from faceattr.data.loading import Split
from faceattr.data.tfdata import to_tf_dataset


def compile_model(model: keras.Model, task, learning_rate: float) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=task.loss,
                  metrics=list(task.compile_metrics))
    return model


def schedule_callbacks(train: dict) -> list[keras.callbacks.Callback]:
    """LR-on-plateau and early stopping, both watching val_loss (never the held-out test split)."""
    return [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=train["lr_factor"], min_delta=train["min_delta"],
                                          patience=train["lr_patience"], min_lr=train["min_lr"]),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=train["early_stopping_patience"],
                                      min_delta=train["min_delta"], restore_best_weights=True),
    ]


def fit(model: keras.Model, config: dict, train_split: Split, val_split: Split,
        callbacks: list | None = None, initial_epoch: int = 0) -> keras.callbacks.History:
    """Compile and fit on tf.data pipelines; extra `callbacks` (tracking, tuner) run alongside.

    `initial_epoch` > 0 continues a model trained that far (Hyperband's later rounds).
    """
    train, task = config["train"], tasks.of(config)
    compile_model(model, task, train["learning_rate"])
    # Class weights (identity: ~1:30) weigh validation rows too, so early stopping and the LR schedule
    # watch the loss being minimised, not one the negatives dominate.
    weights = task.class_weights(config, train_split.labels)
    return model.fit(
        to_tf_dataset(train_split, train["batch_size"], task.reads_gender, shuffle_seed=train["seed"],
                      augment=train["augment"] if models.input_kind(config).augments else False),
        validation_data=to_tf_dataset(val_split, train["batch_size"], task.reads_gender, class_weight=weights),
        epochs=train["epochs"],
        initial_epoch=initial_epoch,
        callbacks=schedule_callbacks(train) + list(callbacks or []),
        shuffle=False,  # the tf.data pipeline shuffles
        class_weight=weights,
        verbose=train["verbose"],
    )


def release_fit_memory(model: keras.Model) -> None:
    """Hand back what only the fit needed, before the model is judged and logged: Keras' traced train and
    test steps (rebuilt if the model is fit again) and, with glibc, the heap pages the fit freed
    (`malloc_trim`). A run's peak memory is what the fit left plus the logged model's reload, which MLflow
    does to check the input example (issue 30: 8-10 MiB of a ~1.08 GiB peak)."""
    model.train_function = model.test_function = None
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None
    if trim is not None:   # glibc (musl has none)
        trim(0)


def scores(model: keras.Model, config: dict, inputs: dict) -> np.ndarray:
    """The task's score per row of `inputs` (the clipped value, p(female), p(person)), predicted in the
    batches the model trained in: a batch's activations are most of a run's peak memory (batches of 256
    eye crops took ~100 MiB more than the fit itself, issue 30)."""
    return tasks.of(config).scores(model.predict(inputs, batch_size=config["train"]["batch_size"], verbose=0))
