"""Threshold-free views of a classifier: per-class ROC and precision-recall, and raw confusion counts.

Accuracy and F1 judge the argmax only; these look at the whole ranking of scores, which is what
matters once someone picks a confidence threshold per class.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def one_vs_rest(probs: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict:
    """ROC AUC and average precision of each class against the rest, and their macro means.

    A class with no positive (or no negative) test row has no ROC curve; it is listed under
    ``skipped`` rather than scored, so the macro means cover only the classes that could be scored
    (``None`` when none could).
    """
    probs, y_true = np.asarray(probs), np.asarray(y_true)
    if probs.shape != (len(y_true), len(labels)):
        raise ValueError(f"expected probs of shape ({len(y_true)}, {len(labels)}) for {len(labels)} labels, got {probs.shape}")
    per_class, skipped = {}, []
    for i, name in enumerate(labels):
        positive = y_true == i
        if positive.all() or not positive.any():
            skipped.append(name)
            continue
        per_class[name] = {"roc_auc": float(roc_auc_score(positive, probs[:, i])),
                           "average_precision": float(average_precision_score(positive, probs[:, i])),
                           "support": int(positive.sum())}
    return {"per_class": per_class, "skipped": skipped,
            "macro_roc_auc": _mean([c["roc_auc"] for c in per_class.values()]),
            "macro_average_precision": _mean([c["average_precision"] for c in per_class.values()])}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def roc_pr_plot(probs: np.ndarray, y_true: np.ndarray, labels: list[str], path: Path, max_classes: int = 12) -> Path:
    """ROC and precision-recall curves side by side, one line per class. With more than ``max_classes``
    scored classes only the worst by AUC are drawn (the title says so): those are the ones to look at."""
    scores = one_vs_rest(probs, y_true, labels)
    ranked = sorted(scores["per_class"], key=lambda n: scores["per_class"][n]["roc_auc"])
    shown = ranked[:max_classes]
    probs, y_true = np.asarray(probs), np.asarray(y_true)
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 5))
    for name in shown:
        i = labels.index(name)
        fpr, tpr, _ = roc_curve(y_true == i, probs[:, i])
        precision, recall, _ = precision_recall_curve(y_true == i, probs[:, i])
        roc_ax.plot(fpr, tpr, linewidth=1, label=f"{name} ({scores['per_class'][name]['roc_auc']:.3f})")
        pr_ax.plot(recall, precision, linewidth=1, label=f"{name} ({scores['per_class'][name]['average_precision']:.3f})")
    roc_ax.plot([0, 1], [0, 1], "--", color="#999999", linewidth=1)
    _axes(roc_ax, "false positive rate", "true positive rate", "ROC (AUC)")
    _axes(pr_ax, "recall", "precision", "precision-recall (AP)")
    which = f"worst {len(shown)} of {len(ranked)} classes by AUC" if len(ranked) > len(shown) else f"{len(shown)} classes"
    fig.suptitle(f"one-vs-rest, {which}: macro AUC {_fmt(scores['macro_roc_auc'])}, "
                 f"macro AP {_fmt(scores['macro_average_precision'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right" if "ROC" in title else "lower left", fontsize=7)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def confusion_raw(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], path: Path, title: str = "confusion matrix (counts)") -> Path:
    """Confusion matrix in row counts, the companion of ``plots.confusion``: normalised rows show where a
    class goes, counts show how many rows that is (30% of 4 rows is not 30% of 400)."""
    cm = confusion_matrix(y_true, y_pred, labels=range(len(labels)))
    size = max(5.0, 0.16 * len(labels) + 3)
    fontsize = max(4, 10 - len(labels) // 12)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 12:
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
