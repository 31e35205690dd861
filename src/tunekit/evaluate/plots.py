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


def predicted_vs_true(y_true: np.ndarray, pred: np.ndarray, base_pred: np.ndarray, path: Path, title: str) -> Path:
    """Regression: predicted against true target for the fine-tuned model and the baseline, with the
    y = x line a perfect model would sit on (points below it are under-predictions)."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(y_true, base_pred, s=12, alpha=0.5, color="#999999", label="baseline", edgecolors="none")
    ax.scatter(y_true, pred, s=12, alpha=0.7, color="#1f77b4", label="fine-tuned", edgecolors="none")
    low = float(min(np.min(y_true), np.min(pred), np.min(base_pred)))
    high = float(max(np.max(y_true), np.max(pred), np.max(base_pred)))
    ax.plot([low, high], [low, high], "--", color="#d62728", linewidth=1, label="y = x (perfect)")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def residuals(y_true: np.ndarray, pred: np.ndarray, base_pred: np.ndarray, path: Path) -> Path:
    """Regression: histogram of residuals (predicted - true) of both models on shared bins."""
    res, base_res = pred - y_true, base_pred - y_true
    bins = np.histogram_bin_edges(np.concatenate([res, base_res]), bins=min(40, max(10, len(res) // 5)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(base_res, bins=bins, alpha=0.5, color="#999999", label="baseline")
    ax.hist(res, bins=bins, alpha=0.6, color="#1f77b4", label="fine-tuned")
    ax.axvline(0, color="#d62728", linestyle="--", linewidth=1)
    ax.set_xlabel("residual (predicted - true)")
    ax.set_ylabel("test rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
