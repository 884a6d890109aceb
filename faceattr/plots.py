"""The figures a training run shows a person: learning curves, predicted vs true, the error gallery,
the crop check.

Each function returns a matplotlib Figure (tracking.log_figures writes and closes them). Constrained
layout keeps axis labels and captions inside the PNG.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")   # runs write PNGs; there is never a screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from faceattr.data.manifest import GENDERS  # noqa: E402

GENDER_COLOURS = {"male": "tab:blue", "female": "tab:orange", None: "tab:gray"}


def learning_curves(history: dict, baseline: float | None) -> plt.Figure:
    """loss and val_loss per epoch, the baseline's validation loss as a dashed line, and a dotted
    line at each epoch the learning rate dropped (`learning_rate` in the history)."""
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for key in ("loss", "val_loss"):
        ax.plot(history.get(key, []), label=key, marker=".")
    if baseline is not None and math.isfinite(baseline):
        ax.axhline(baseline, color="k", ls="--", lw=1, label=f"baseline ({baseline:.3g})")
    rates = np.asarray(history.get("learning_rate", history.get("lr", [])), float)
    for i, epoch in enumerate(np.flatnonzero(rates[1:] < rates[:-1]) + 1):
        # the rate logged at epoch e was cut at its end: the drop shows from epoch e + 1 on
        ax.axvline(epoch - 0.5, color="tab:red", ls=":", lw=1,
                   label="learning rate cut" if i == 0 else None)
    ax.set(xlabel="epoch", ylabel="loss", title="learning curves")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    return fig


def predicted_vs_true(y_true, y_pred, gender, target: str) -> plt.Figure:
    """Validation answers against the labels, one colour per gender (grey: no gender label)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    gender = np.asarray(gender if gender is not None else [None] * len(y_true), object)
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    jitter = np.random.default_rng(0).normal(0, 0.015, len(y_true))   # labels sit on a few values
    for group in (*GENDERS, None):
        rows = gender == group if group else ~np.isin(gender, GENDERS)
        if rows.any():
            ax.scatter(y_true[rows] + jitter[rows], y_pred[rows], s=8, alpha=0.5, color=GENDER_COLOURS[group],
                       label=f"{group or 'no gender label'} (n={int(rows.sum())})")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title="validation: predicted vs true",
           xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
    ax.legend(fontsize="small", loc="upper left")
    return fig


def error_gallery(images, captions: list[str], title: str, columns: int = 8) -> plt.Figure:
    """Photos in a grid, each with its caption (what was true, what the model said)."""
    columns = max(1, min(columns, len(images)))   # a few mistakes: no empty cells beside them
    rows = max(1, math.ceil(len(images) / columns))
    aspect = images[0].shape[0] / images[0].shape[1] if len(images) else 1.0   # eye bands are wide, faces square
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, (1.6 * aspect + 0.5) * rows + 0.4),
                             layout="constrained", squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(np.asarray(image, np.uint8))
        ax.set_title(caption, fontsize=10)   # 14 px in the 100-dpi PNG: readable at the report's width
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(textwrap.fill(title, max(40, int(columns * 1.6 * 10))))   # ~10 characters an inch of width
    return fig


def crop_check(rows: list, region: str) -> plt.Figure:
    """Per photo (name, its training crops, the crops the served model cuts from the same whole photo or
    why it cannot): the two side by side, so a person sees at a glance whether they match."""
    fig, axes = plt.subplots(len(rows), 2, figsize=(6, 1.6 * len(rows)), squeeze=False)
    for (name, trained, served), (left, right) in zip(rows, axes):
        left.imshow(np.concatenate(list(trained), axis=1))
        left.set_title(f"training: {name}"[:48], fontsize=7)
        if isinstance(served, str):
            right.text(0.5, 0.5, served, ha="center", va="center", wrap=True, fontsize=7)
        else:
            right.imshow(np.concatenate(list(served), axis=1))
            right.set_title("served cut of the whole photo", fontsize=7)
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"crop check, region {region}", fontsize=9)
    fig.tight_layout()
    return fig
