"""Is the fine-tuned model really better than the baseline, or did it get lucky on these test rows?

Both models answer the same frozen test rows, so every comparison here is *paired*: the bootstrap
draws one set of row indices per resample and scores both models on it, and McNemar's test looks
only at the rows where the two disagree. Pairing removes the variance the rows share, which is
why a +2 point gain can be significant on 3,000 rows even when each model's own interval is wider.
The bootstrap takes any metric of (true values, predictions), so regression errors go through the
same machinery (``compare_regression``); McNemar's test is about right/wrong and is for labels only.

``bootstrap`` is tunekit's one bootstrap: it draws the rows, and every interval (``paired_bootstrap``
here, ``textgen.compare`` for generated text, the live-quality intervals of monitoring) is a
statistic of its draws, so one seed means the same resampled rows everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

from tunekit.config import lower_is_better
from tunekit.evaluate.metrics import (REGRESSION_FNS, balanced_accuracy, macro_f1, mcc, resampled_label_metrics,
                                      resampled_regression_metrics)

MetricFn = Callable[[np.ndarray, np.ndarray], float]
Statistic = Callable[[np.ndarray], "float | np.ndarray"]

EXACT_BELOW = 25  # discordant pairs under which McNemar's chi-square approximation is too rough


def bootstrap(statistic: Statistic, n_rows: int, n_resamples: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> tuple[np.ndarray, float | np.ndarray, float | np.ndarray]:
    """``statistic`` on ``n_resamples`` resamples of ``n_rows`` rows drawn with replacement, and the
    percentile interval of its values: ``(values, low, high)``.

    ``statistic`` takes one resample's row indices and returns a float, or a 1-D array of floats
    (several metrics scored on the same rows; ``low`` and ``high`` are then arrays too). The draw
    depends only on ``seed`` and the sizes, so two models scored with one seed see the same rows:
    that is what makes a comparison paired.
    """
    idx = resample_rows(n_rows, n_resamples, seed, confidence)
    values = np.array([statistic(i) for i in idx], dtype=float)
    low, high = _percentiles(values, confidence)
    return values, low, high


def resample_rows(n_rows: int, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> np.ndarray:
    """The bootstrap's draw: ``(n_resamples, n_rows)`` row indices with replacement, a function of the seed and sizes alone."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n_rows, size=(n_resamples, n_rows))


def _percentiles(values: np.ndarray, confidence: float):
    tail = (1 - confidence) / 2
    return np.quantile(values, [tail, 1 - tail], axis=0)


def _paired(a: float, b: float, diffs: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    low, high = _percentiles(diffs, confidence)
    return {"a": a, "b": b, "diff": b - a, "low": float(low), "high": float(high), "p_value": bootstrap_p(b - a, diffs)}


def paired_bootstrap(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, metric_fn: MetricFn,
                     n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Percentile interval and two-sided p-value for ``metric(b) - metric(a)``.

    Each resample draws test rows with replacement and scores *both* models on the same rows, so
    the interval reflects how much the gap (not each score) moves with the choice of test rows.
    The p-value is ``bootstrap_p``'s.
    """
    y_true, pred_a, pred_b = _paired_arrays(y_true, pred_a, pred_b)
    diffs, _, _ = bootstrap(lambda i: metric_fn(y_true[i], pred_b[i]) - metric_fn(y_true[i], pred_a[i]),
                            len(y_true), n_resamples, seed, confidence)
    return _paired(float(metric_fn(y_true, pred_a)), float(metric_fn(y_true, pred_b)), diffs, confidence)


def bootstrap_p(observed: float, diffs: np.ndarray) -> float:
    """Two-sided p-value of an observed gap against its resampled values: the share of resampled gaps
    on the far side of 0 (ties included, to stay conservative), doubled and capped at 1; a gap of
    exactly 0 gets p = 1. Its resolution is 2 / len(diffs): a p of 0 means "below that", not "impossible"."""
    if observed == 0:
        return 1.0
    other_side = diffs <= 0 if observed > 0 else diffs >= 0
    return float(min(1.0, 2 * other_side.mean()))


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))  # what accuracy_score computes, without its input checks per resample


PAIRED_METRICS: dict[str, MetricFn] = {
    "accuracy": _accuracy,
    "macro_f1": macro_f1,
    "balanced_accuracy": balanced_accuracy,
    "mcc": mcc,
}


def compare_metrics(y_true: np.ndarray, pred_baseline: np.ndarray, pred_model: np.ndarray, labels: list[str],
                    n_resamples: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Paired bootstrap of the headline metrics, model minus baseline (``diff`` > 0: the model is better).

    Every metric uses the same seed, hence the same resampled rows, so their intervals are comparable.
    The same as ``paired_bootstrap`` with each of ``PAIRED_METRICS``, with the resamples scored from
    confusion counts all at once (``metrics.resampled_label_metrics``: the same values, much faster).
    """
    y_true, pred_baseline, pred_model = _paired_arrays(y_true, pred_baseline, pred_model)
    _check_label_ids(len(labels), y_true=y_true, pred_baseline=pred_baseline, pred_model=pred_model)
    rows = resample_rows(len(y_true), n_resamples, seed)
    base = resampled_label_metrics(y_true, pred_baseline, rows, len(labels))
    model = resampled_label_metrics(y_true, pred_model, rows, len(labels))
    return {name: _paired(float(fn(y_true, pred_baseline)), float(fn(y_true, pred_model)), model[name] - base[name])
            for name, fn in PAIRED_METRICS.items()}


def compare_regression(y_true: np.ndarray, pred_baseline: np.ndarray, pred_model: np.ndarray,
                       n_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Paired bootstrap of MSE, RMSE, MAE and R², model minus baseline, on the same resampled rows.

    ``diff`` keeps the sign of "model minus baseline" for every metric, so for the error metrics a
    negative ``diff`` is the improvement; each entry says which way is better (``lower_is_better``)
    and whether the model is ``better`` on these rows, so nobody has to remember.
    """
    y_true, pred_baseline, pred_model = (np.asarray(x, dtype=float) for x in _paired_arrays(y_true, pred_baseline, pred_model))
    rows = resample_rows(len(y_true), n_resamples, seed)
    base = resampled_regression_metrics(y_true, pred_baseline, rows)
    model = resampled_regression_metrics(y_true, pred_model, rows)
    out = {}
    for name, fn in REGRESSION_FNS.items():
        r = _paired(float(fn(y_true, pred_baseline)), float(fn(y_true, pred_model)), model[name] - base[name])
        lower = lower_is_better(name)
        out[name] = {**r, "lower_is_better": lower, "better": (r["diff"] < 0) if lower else (r["diff"] > 0)}
    return out


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """McNemar's test on the rows where exactly one model is right (the only rows that tell them apart).

    Below ``EXACT_BELOW`` discordant rows the exact binomial test is used (``statistic`` is None);
    above, the chi-square with continuity correction ``(|b01 - b10| - 1)^2 / (b01 + b10)``.
    """
    y_true, pred_a, pred_b = _paired_arrays(y_true, pred_a, pred_b)
    a_right, b_right = pred_a == y_true, pred_b == y_true
    b01, b10 = int(np.sum(a_right & ~b_right)), int(np.sum(~a_right & b_right))
    table = {"a_right_b_wrong": b01, "a_wrong_b_right": b10,
             "both_right": int(np.sum(a_right & b_right)), "both_wrong": int(np.sum(~a_right & ~b_right))}
    discordant = b01 + b10
    if discordant == 0:  # the models never disagree on correctness: nothing to test
        return {**table, "statistic": None, "p_value": 1.0, "method": "exact"}
    if discordant < EXACT_BELOW:
        p = sps.binomtest(b01, discordant, 0.5, alternative="two-sided").pvalue
        return {**table, "statistic": None, "p_value": float(p), "method": "exact"}
    statistic = (abs(b01 - b10) - 1) ** 2 / discordant
    return {**table, "statistic": float(statistic), "p_value": float(sps.chi2.sf(statistic, df=1)), "method": "chi2"}


def example_diff(ids: Sequence, texts: Sequence[str], y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                 labels: list[str], max_examples: int = 10, seed: int = 0) -> dict:
    """Rows the model fixed (a wrong, b right), broke (a right, b wrong) and both still get wrong.

    Counts cover every row; the examples are a seeded random sample of at most ``max_examples`` per
    group, in test-set order, so a report shows varied cases rather than the first few rows.
    """
    y_true, pred_a, pred_b = _paired_arrays(y_true, pred_a, pred_b)
    if not len(ids) == len(texts) == len(y_true):
        raise ValueError(f"ids, texts and y_true must have one entry per test row, got {len(ids)}, {len(texts)} and {len(y_true)}")
    a_right, b_right = pred_a == y_true, pred_b == y_true
    groups = {"fixed": ~a_right & b_right, "broken": a_right & ~b_right, "both_wrong": ~a_right & ~b_right}
    rng = np.random.default_rng(seed)
    out: dict = {"counts": {name: int(mask.sum()) for name, mask in groups.items()}}
    out["counts"]["both_right"] = int(np.sum(a_right & b_right))
    for name, mask in groups.items():
        rows = np.flatnonzero(mask)
        picked = np.sort(rng.choice(rows, size=min(max_examples, len(rows)), replace=False))
        out[name] = [{"id": ids[i], "text": texts[i], "label": labels[y_true[i]],
                      "a": labels[pred_a[i]], "b": labels[pred_b[i]]} for i in picked.tolist()]
    return out


def _paired_arrays(y_true, pred_a, pred_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both models must have answered the very same rows, or nothing here is paired."""
    arrays = tuple(np.asarray(x) for x in (y_true, pred_a, pred_b))
    if any(x.ndim != 1 for x in arrays):
        raise ValueError(f"expected 1-D label ids, got shapes {[x.shape for x in arrays]} (take probs.argmax(1) first)")
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
        raise ValueError(f"y_true and both predictions must cover the same rows, got lengths {[len(x) for x in arrays]}")
    if len(arrays[0]) == 0:
        raise ValueError("no test rows to compare")
    return arrays


def _check_label_ids(n_labels: int, **arrays: np.ndarray) -> None:
    for name, x in arrays.items():
        bad = x[(x < 0) | (x >= n_labels)]
        if bad.size:
            raise ValueError(f"{name} holds label id {int(bad[0])}, outside the {n_labels} labels (ids 0..{n_labels - 1})")
