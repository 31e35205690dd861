"""Classification metrics, computed the same way for the baseline, the fine-tuned model and the champion."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Headline metrics plus per-class F1. Macro averages run over every label of the task, so a
    class the model never predicts counts as F1 0 rather than being left out."""
    ids = list(range(len(labels)))
    p, r, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    present = support > 0  # classes absent from the test rows would drag macro scores to 0 for nothing
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1[present].mean()),
        "macro_precision": float(p[present].mean()),
        "macro_recall": float(r[present].mean()),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "mcc": _mcc(y_true, y_pred),
        "per_class_f1": {labels[i]: float(f1[i]) for i in ids if present[i]},
        "n": int(len(y_true)),
    }


def headline(m: dict) -> dict[str, float]:
    """The scalar metrics of ``classification_metrics`` (what MLflow and the gate see)."""
    return {k: v for k, v in m.items() if isinstance(v, float)}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    with _quiet():
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def _mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation; 0 on a slice holding a single label, e.g. one class's rows."""
    with _quiet():
        return float(skm.matthews_corrcoef(y_true, y_pred))


@contextmanager
def _quiet():
    """sklearn warns when a prediction names a class absent from the rows, or the rows hold one
    label; both are routine on slices and bootstrap resamples, and handled by the metrics above."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        yield
