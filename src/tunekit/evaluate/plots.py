"""Plots for the report card: where a person would rather look than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (each row sums to 1, so rare classes are as visible as common ones)."""
    cm = confusion_matrix(y_true, y_pred, labels=range(len(labels))).astype(float)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.16 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=max(4, 10 - len(labels) // 12))
    ax.set_yticks(range(len(labels)), labels, fontsize=max(4, 10 - len(labels) // 12))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 12:
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", color="white" if cm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_class_f1(tuned: dict[str, float], baseline: dict[str, float], path: Path) -> Path:
    """Per-class F1 of both models, classes sorted by the fine-tuned model's F1 (worst first)."""
    names = sorted(tuned, key=tuned.get)
    height = max(3.0, 0.18 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(8, height))
    y = np.arange(len(names))
    ax.barh(y - 0.2, [baseline.get(n, 0.0) for n in names], height=0.4, label="baseline", color="#bbbbbb")
    ax.barh(y + 0.2, [tuned[n] for n in names], height=0.4, label="fine-tuned", color="#1f77b4")
    ax.set_yticks(y, names, fontsize=max(4, 10 - len(names) // 12))
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 on test")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curve(history: list[dict], primary: str, path: Path) -> Path:
    """Train loss and a validation column per epoch: ``val_<primary>`` of each history row
    (classification passes its primary metric; generation passes ``"loss"`` to plot ``val_loss``)."""
    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", color="#d62728", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h[f"val_{primary}"] for h in history], "s-", color="#1f77b4", label=f"validation {primary}")
    ax2.set_ylabel(f"validation {primary}")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
