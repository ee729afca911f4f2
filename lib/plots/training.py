"""Training curves: the classifier's loss and training-batch accuracy per domain, the CLIP
contrastive loss per set of training pairs, and a diffusion model's loss (the fine-tuned
generator's)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from lib.plots import style

LOSSES = ("loss", "loss_real", "loss_synthetic")
ACCURACIES = ("acc_real", "acc_synthetic")


def classifier_curves_figure(history: pd.DataFrame) -> plt.Figure:
    """Loss (left) and top-1 on the (augmented) training batches (right) against the step, one
    line per history column that has values (:data:`LOSSES`, :data:`ACCURACIES`: the synthetic
    columns are empty in a run without synthetic images)."""
    style()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, cols in ((ax_loss, LOSSES), (ax_acc, ACCURACIES)):
        for col in cols:
            if col in history and history[col].notna().any():
                ax.plot(history["step"], history[col], label=col)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="Training loss")
    ax_acc.set(xlabel="step", ylabel="top-1", ylim=(0, 1), title="Training-batch accuracy")
    ax_loss.legend()
    ax_acc.legend()
    return fig


def clip_loss_figure(history: pd.DataFrame) -> plt.Figure:
    """CLIP training loss against the step, one line per source of pairs (the clip stage's
    ``history``: columns source, step, loss)."""
    style()
    grid = sns.relplot(history, x="step", y="loss", hue="source", kind="line", height=3,
                       aspect=1.6)
    return grid.figure


def diffusion_loss_figure(losses: list[float], window: int = 20) -> plt.Figure:
    """A diffusion model's training loss per step (faint) and its running mean over
    ``window`` steps, e.g. the fine-tuned generator's (``training.json``'s ``losses``)."""
    style()
    fig, ax = plt.subplots(figsize=(6, 3))
    loss = pd.Series(losses, dtype=float)
    ax.plot(loss.index, loss, alpha=0.3, label="per step")
    ax.plot(loss.index, loss.rolling(window, min_periods=1).mean(), label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="diffusion loss", title="Fine-tuning loss")
    ax.legend()
    return fig
