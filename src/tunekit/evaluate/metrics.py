"""Classification and regression metrics, computed the same way for the baseline, the fine-tuned
model, the champion and live feedback (monitoring): scikit-learn's, one function each, pure (arrays
in, a number out) so every stage can import them without importing the others."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
from sklearn import metrics as skm

from tunekit.config import lower_is_better


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
        "mcc": mcc(y_true, y_pred),
        "per_class_f1": {labels[i]: float(f1[i]) for i in ids if present[i]},
        "n": int(len(y_true)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MSE, RMSE and MAE (in the target's units; lower is better) and R² (higher is better)."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    return {"mse": mse(y_true, y_pred), "rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred), "r2": r2(y_true, y_pred),
            "n": int(len(y_true))}


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(skm.mean_squared_error(y_true, y_pred))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(skm.root_mean_squared_error(y_true, y_pred))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(skm.mean_absolute_error(y_true, y_pred))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot: 1 for perfect predictions, 0 for always predicting the mean of ``y_true``,
    negative for worse than that. Rows with one target value (a slice, a resample) have no spread
    to explain: 1 when the predictions match it exactly, else 0 (sklearn's ``force_finite``)."""
    return float(skm.r2_score(y_true, y_pred, force_finite=True))


REGRESSION_FNS = {"mse": mse, "rmse": rmse, "mae": mae, "r2": r2}


def headline(m: dict) -> dict[str, float]:
    """The scalar metrics of ``classification_metrics`` (what MLflow and the gate see)."""
    return {k: v for k, v in m.items() if isinstance(v, float)}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    with _quiet():
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation; 0 on a slice holding a single label, e.g. one class's rows."""
    with _quiet():
        return float(skm.matthews_corrcoef(y_true, y_pred))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the classes present in ``y_true`` (as ``classification_metrics`` averages it),
    so a class missing from these rows (a slice, a resample, a day of feedback) is left out rather
    than scored as F1 0. Labels may be ids or names."""
    return float(skm.f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true), zero_division=0))


# -- the same metrics on many resamples at once (the bootstrap) -----------------------------------------
# The paired bootstrap scores two models on a thousand resamples: 8,000 calls of the functions above
# for the four label metrics, where scikit-learn's input checks (target type, dataframe detection,
# label sets) cost more than the metric itself, about 40% of a whole run on a small model. The
# functions below compute the same definitions from counts, all resamples in a few numpy operations;
# ``tests/evaluate/test_metrics_batched.py`` pins them to the functions above on random resamples,
# missing classes and single-label rows included.

BATCH_CELLS = 4_000_000  # confusion cells held at once: resamples are scored in chunks of this size


def confusions(y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray, n_labels: int) -> np.ndarray:
    """``(len(rows), n_labels, n_labels)`` confusion counts (true label down, predicted across) of
    label ids ``y_true``/``y_pred`` on each resample's row indices ``rows[r]``."""
    codes = y_true[rows].astype(np.int64) * n_labels + y_pred[rows].astype(np.int64)
    codes += np.arange(len(rows), dtype=np.int64)[:, None] * (n_labels * n_labels)
    return np.bincount(codes.ravel(), minlength=len(rows) * n_labels * n_labels).reshape(len(rows), n_labels, n_labels)


def label_metrics_from_confusions(c: np.ndarray) -> dict[str, np.ndarray]:
    """``accuracy``, ``macro_f1``, ``balanced_accuracy`` and ``mcc`` of each confusion matrix in ``c``,
    as ``_accuracy``/``macro_f1``/``balanced_accuracy``/``mcc`` define them (averages over the classes
    present in the true labels; MCC 0 when either side holds one label)."""
    c = c.astype(float)
    tp = np.diagonal(c, axis1=1, axis2=2)
    true, pred = c.sum(axis=2), c.sum(axis=1)
    n = true.sum(axis=1)
    present = true > 0
    n_present = present.sum(axis=1)
    f1 = np.divide(2 * tp, true + pred, out=np.zeros_like(tp), where=present)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=present)
    correct = tp.sum(axis=1)
    cov_tp = correct * n - (true * pred).sum(axis=1)
    cov_pp, cov_tt = n * n - (pred * pred).sum(axis=1), n * n - (true * true).sum(axis=1)
    denom = cov_tt * cov_pp
    return {"accuracy": correct / n, "macro_f1": f1.sum(axis=1) / n_present, "balanced_accuracy": recall.sum(axis=1) / n_present,
            "mcc": np.divide(cov_tp, np.sqrt(denom, where=denom > 0, out=np.ones_like(denom)), out=np.zeros_like(denom), where=denom > 0)}


def resampled_label_metrics(y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray, n_labels: int) -> dict[str, np.ndarray]:
    """The four label metrics of ``y_pred`` on every resample of ``rows`` (label ids), in chunks of ``BATCH_CELLS``."""
    step = max(1, BATCH_CELLS // (n_labels * n_labels))
    parts = [label_metrics_from_confusions(confusions(y_true, y_pred, rows[i:i + step], n_labels)) for i in range(0, len(rows), step)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def resampled_regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """MSE, RMSE, MAE and R² (``force_finite`` as ``r2``) of ``y_pred`` on every resample of ``rows``."""
    t, e = y_true[rows], y_pred[rows] - y_true[rows]
    mse_ = (e * e).mean(axis=1)
    ss_res, ss_tot = (e * e).sum(axis=1), ((t - t.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    constant = ss_tot == 0
    r2_ = np.where(constant, np.where(ss_res == 0, 1.0, 0.0), 1 - ss_res / np.where(constant, 1.0, ss_tot))
    return {"mse": mse_, "rmse": np.sqrt(mse_), "mae": np.abs(e).mean(axis=1), "r2": r2_}


def best(results: list, primary: str):
    """The best of ``results`` (anything with a ``metrics`` dict: baselines, candidate models) on the
    primary metric, in the metric's own direction (lowest for an error such as RMSE)."""
    sign = -1 if lower_is_better(primary) else 1
    return max(results, key=lambda r: sign * r.metrics[primary])


@contextmanager
def _quiet():
    """sklearn warns when a prediction names a class absent from the rows, or the rows hold one
    label; both are routine on slices and bootstrap resamples, and handled by the metrics above."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        yield
