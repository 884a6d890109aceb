"""Fit a model the seeds' way: Adam, learning rate cut 10x on plateau, early stopping to the best weights."""

from __future__ import annotations

import keras
import numpy as np

from faceattr.data.pipeline import Split, to_tf_dataset


def compile_model(model: keras.Model, task: str, learning_rate: float) -> keras.Model:
    if task == "regression":
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    elif task == "identity":  # one sigmoid: P(the photo shows the target person)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                      metrics=["accuracy"])
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                      metrics=["accuracy"])
    return model


def schedule_callbacks(train: dict) -> list[keras.callbacks.Callback]:
    """LR-on-plateau and early stopping, both watching val_loss (never the held-out test split)."""
    return [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=train["lr_factor"], min_delta=train["min_delta"],
                                          patience=train["lr_patience"], min_lr=train["min_lr"]),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=train["early_stopping_patience"],
                                      min_delta=train["min_delta"], restore_best_weights=True),
    ]


def class_weights(config: dict, train_split: Split) -> dict[int, float] | None:
    """identity with `train.balance: class_weight`: n / (2 n_class) per class (the target person is
    ~1 in 30 photos), so both classes weigh the same in the loss; None otherwise."""
    if config["task"] != "identity" or config["train"].get("balance", "class_weight") != "class_weight":
        return None
    labels = np.asarray(train_split.labels) >= 0.5
    n, positives = len(labels), int(labels.sum())
    if positives in (0, n):
        return None
    return {0: n / (2 * (n - positives)), 1: n / (2 * positives)}


def fit(model: keras.Model, config: dict, train_split: Split, val_split: Split,
        callbacks: list | None = None, initial_epoch: int = 0) -> keras.callbacks.History:
    """Compile and fit on tf.data pipelines; extra `callbacks` (tracking, tuner) run alongside.

    `initial_epoch` > 0 continues a model trained that far (Hyperband's later rounds).
    """
    train = config["train"]
    with_gender = config["task"] == "regression"
    compile_model(model, config["task"], train["learning_rate"])
    return model.fit(
        to_tf_dataset(train_split, train["batch_size"], with_gender, shuffle_seed=train["seed"],
                      augment=train.get("augment", False) or False),
        validation_data=to_tf_dataset(val_split, train["batch_size"], with_gender),
        epochs=train["epochs"],
        initial_epoch=initial_epoch,
        callbacks=schedule_callbacks(train) + list(callbacks or []),
        shuffle=False,  # the tf.data pipeline shuffles
        class_weight=class_weights(config, train_split),
        verbose=train["verbose"],
    )
