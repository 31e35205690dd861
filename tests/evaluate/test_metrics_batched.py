"""The bootstrap's batched metrics (computed from counts, all resamples at once) equal the one
definition of each metric (scikit-learn's, in ``evaluate.metrics``) resample by resample, so the
faster path cannot change an interval."""

from __future__ import annotations

import numpy as np
import pytest
from torch.testing import assert_close

from tunekit.evaluate import metrics, stats


def _labels(seed: int, n: int, k: int, skew: float):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    y[: n // 3] = 0  # a frequent class, so resamples miss the rare ones
    pred = np.where(rng.random(n) < skew, y, rng.integers(0, k, n))
    return y, pred


@pytest.mark.parametrize("seed,n,k,skew", [(0, 40, 5, 0.6), (1, 25, 12, 0.3), (2, 200, 3, 0.9), (3, 8, 4, 0.0)])
def test_label_metrics_of_each_resample_equal_the_single_metric_functions(seed, n, k, skew):
    y, pred = _labels(seed, n, k, skew)
    rows = stats.resample_rows(n, 60, seed=seed)
    rows[0] = 0  # a resample holding one row: one true label, one predicted (MCC 0, F1 of a single class)
    batched = metrics.resampled_label_metrics(y, pred, rows, k)
    for name, fn in stats.PAIRED_METRICS.items():
        one_by_one = np.array([fn(y[r], pred[r]) for r in rows])
        assert_close(batched[name], one_by_one, rtol=1e-12, atol=1e-12, msg=name)


def test_chunks_of_resamples_give_the_same_values(monkeypatch):
    y, pred = _labels(4, 50, 6, 0.5)
    rows = stats.resample_rows(50, 37, seed=1)
    whole = metrics.resampled_label_metrics(y, pred, rows, 6)
    monkeypatch.setattr(metrics, "BATCH_CELLS", 6 * 6 * 5)  # five resamples per chunk, the last one short
    chunked = metrics.resampled_label_metrics(y, pred, rows, 6)
    for name in whole:
        assert_close(chunked[name], whole[name], rtol=0, atol=0)


def test_regression_metrics_of_each_resample_equal_the_single_metric_functions():
    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    y[:10] = 2.0
    pred = y + rng.normal(scale=0.5, size=30)
    rows = stats.resample_rows(30, 50, seed=2)
    rows[0] = 0  # one target value: R² by sklearn's force_finite rule
    rows[1] = np.arange(30) % 10  # rows of the constant target only
    batched = metrics.resampled_regression_metrics(y, pred, rows)
    for name, fn in metrics.REGRESSION_FNS.items():
        assert_close(batched[name], np.array([fn(y[r], pred[r]) for r in rows]), rtol=1e-10, atol=1e-12, msg=name)


def test_compare_metrics_equals_paired_bootstrap_metric_by_metric():
    y, pred = _labels(5, 120, 7, 0.7)
    _, base = _labels(6, 120, 7, 0.5)
    fast = stats.compare_metrics(y, base, pred, [str(i) for i in range(7)], n_resamples=300, seed=3)
    for name, fn in stats.PAIRED_METRICS.items():
        slow = stats.paired_bootstrap(y, base, pred, fn, n_resamples=300, seed=3)
        assert fast[name] == pytest.approx(slow, abs=1e-12), name
    assert fast["accuracy"]["diff"] > 0  # the better predictions win on these rows
