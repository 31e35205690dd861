"""Metrics per slice of the test rows, beside the baseline's, with the slices where the
fine-tuned model is worse flagged: an average gain can hide a group of users that got worse.
For regression "worse" follows the primary metric's direction (a higher RMSE is worse)."""

from __future__ import annotations

import numpy as np

from tunekit.config import lower_is_better
from tunekit.evaluate.metrics import classification_metrics, regression_metrics


def length_buckets(texts: list[str], edges: list[int]) -> list[str]:
    """Bucket name per text by word count, e.g. edges [5, 15] -> "<=5", "6-15", ">15"."""
    names = []
    for text in texts:
        n = len(text.split())
        lower = 0
        for edge in edges:
            if n <= edge:
                names.append(f"{lower + 1}-{edge} words" if lower else f"<={edge} words")
                break
            lower = edge
        else:
            names.append(f">{edges[-1]} words")
    return names


def slice_table(groups: dict[str, list[str]], y_true: np.ndarray, pred: np.ndarray, base_pred: np.ndarray,
                labels: list[str], primary: str, min_rows: int = 10) -> list[dict]:
    """One row per slice with at least ``min_rows`` rows: n, the model's and the baseline's
    primary metric and accuracy, and ``worse`` when the model's primary metric is below the baseline's."""
    rows = []
    for kind, names in groups.items():
        names_arr = np.asarray(names)
        for name in dict.fromkeys(sorted(names, key=_bucket_order)):  # buckets in length order, labels alphabetically
            idx = np.flatnonzero(names_arr == name)
            if len(idx) < min_rows:
                continue
            ours = classification_metrics(y_true[idx], pred[idx], labels)
            theirs = classification_metrics(y_true[idx], base_pred[idx], labels)
            rows.append({"slice": f"{kind}={name}", "n": int(len(idx)), primary: ours[primary], f"baseline_{primary}": theirs[primary],
                         "accuracy": ours["accuracy"], "baseline_accuracy": theirs["accuracy"], "worse": ours[primary] < theirs[primary]})
    return rows


def regression_slice_table(groups: dict[str, list[str]], y_true: np.ndarray, pred: np.ndarray, base_pred: np.ndarray,
                           primary: str, min_rows: int = 10) -> list[dict]:
    """As ``slice_table`` for a numeric target: the primary metric and MAE of both models per slice;
    ``worse`` when the model's primary metric is worse than the baseline's in its own direction."""
    rows = []
    lower = lower_is_better(primary)
    for kind, names in groups.items():
        names_arr = np.asarray(names)
        for name in dict.fromkeys(sorted(names, key=_bucket_order)):
            idx = np.flatnonzero(names_arr == name)
            if len(idx) < min_rows:
                continue
            ours, theirs = regression_metrics(y_true[idx], pred[idx]), regression_metrics(y_true[idx], base_pred[idx])
            worse = ours[primary] > theirs[primary] if lower else ours[primary] < theirs[primary]
            rows.append({"slice": f"{kind}={name}", "n": int(len(idx)), primary: ours[primary], f"baseline_{primary}": theirs[primary],
                         "mae": ours["mae"], "baseline_mae": theirs["mae"], "worse": bool(worse)})
    return rows


def target_buckets(y: np.ndarray, n: int = 4) -> list[str]:
    """Quartile (by default) of each true target, named by its range, e.g. "q1 (2.5 to 7)": where
    in the target's range the model goes wrong (often the extremes, which regress to the mean)."""
    edges = np.quantile(y, np.linspace(0, 1, n + 1))
    idx = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, n - 1)
    return [f"q{i + 1} ({edges[i]:.4g} to {edges[i + 1]:.4g})" for i in idx]


def _bucket_order(name: str) -> tuple[int, str]:
    """Sort "<=5 words" < "6-10 words" < ">20 words"; other slice names alphabetically after them."""
    digits = "".join(c if c.isdigit() else " " for c in name).split()
    if not digits:
        return (1 << 30, name)
    return (int(digits[0]) + (1 << 20 if name.startswith(">") else 0), name)
