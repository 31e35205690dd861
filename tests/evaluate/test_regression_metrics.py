"""Regression metrics against hand-computed values, and the direction-aware comparisons built on them."""

from __future__ import annotations

import numpy as np
import pytest

from tunekit.evaluate.explain import occlusion_value, render_markdown
from tunekit.evaluate.metrics import r2, regression_metrics
from tunekit.report.markdown import change_word
from tunekit.evaluate.slices import regression_slice_table, target_buckets
from tunekit.evaluate.stats import compare_regression


def test_metrics_on_a_small_hand_example():
    # errors 1, -2, 0, 3: squared 1, 4, 0, 9 -> MSE 14/4 = 3.5; |errors| 6/4 = 1.5
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(y, y + np.array([1.0, -2.0, 0.0, 3.0]))
    assert m["mse"] == pytest.approx(3.5)
    assert m["rmse"] == pytest.approx(np.sqrt(3.5))
    assert m["mae"] == pytest.approx(1.5)
    # SS_tot of 1..4 around 2.5 is 5, SS_res is 14: R² = 1 - 14/5
    assert m["r2"] == pytest.approx(1 - 14 / 5)
    assert m["n"] == 4


def test_r2_is_one_for_a_perfect_prediction_and_zero_for_the_mean():
    y = np.array([3.0, -1.0, 10.0, 7.5, 0.0])
    assert r2(y, y.copy()) == 1.0
    assert r2(y, np.full_like(y, y.mean())) == pytest.approx(0.0, abs=1e-12)
    assert r2(y, np.full_like(y, y.mean() + 5)) < 0  # worse than the mean
    assert r2(np.full(3, 2.0), np.full(3, 2.0)) == 1.0 and r2(np.full(3, 2.0), np.array([1.0, 2.0, 3.0])) == 0.0


def test_sklearn_agrees():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y, p = rng.normal(50, 10, 200), rng.normal(50, 10, 200)
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))


def test_paired_bootstrap_of_errors_knows_which_way_is_better():
    rng = np.random.default_rng(1)
    y = rng.normal(100, 15, 300)
    close, far = y + rng.normal(0, 2, 300), y + rng.normal(0, 8, 300)
    r = compare_regression(y, far, close, n_resamples=300, seed=0)  # the model (close) is much better than the baseline (far)
    assert r["rmse"]["diff"] < 0 and r["rmse"]["high"] < 0 and r["rmse"]["lower_is_better"] and r["rmse"]["better"]
    assert r["r2"]["diff"] > 0 and r["r2"]["low"] > 0 and not r["r2"]["lower_is_better"] and r["r2"]["better"]
    assert r["mae"]["p_value"] < 0.01
    assert r["rmse"]["b"] == pytest.approx(regression_metrics(y, close)["rmse"])
    worse = compare_regression(y, close, far, n_resamples=300, seed=0)
    assert not any(row["better"] for row in worse.values())


def test_change_word_follows_the_metric_direction():
    assert change_word("rmse", -0.5) == "better" and change_word("rmse", 0.5) == "worse"
    assert change_word("r2", 0.1) == "better" and change_word("macro_f1", -0.1) == "worse"
    assert change_word("mae", 0.0) == "same"


def test_slice_flags_a_slice_with_a_higher_error_as_worse():
    y = np.arange(40, dtype=float)
    base = y + 1.0                       # off by 1 everywhere
    model = y.copy()
    model[:20] += 3.0                    # off by 3 on the "app" rows, perfect on "web"
    channel = ["app"] * 20 + ["web"] * 20
    rows = {r["slice"]: r for r in regression_slice_table({"channel": channel}, y, model, base, "rmse")}
    assert rows["channel=app"]["rmse"] == pytest.approx(3.0) and rows["channel=app"]["worse"]
    assert rows["channel=web"]["rmse"] == 0.0 and not rows["channel=web"]["worse"]
    assert rows["channel=app"]["baseline_mae"] == pytest.approx(1.0)
    by_r2 = {r["slice"]: r for r in regression_slice_table({"channel": channel}, y, model, base, "r2")}
    assert by_r2["channel=app"]["worse"] and not by_r2["channel=web"]["worse"]


def test_target_buckets_are_quartiles_named_by_range():
    names = target_buckets(np.arange(1.0, 9.0))
    assert names[0] == names[1] == "q1 (1 to 2.75)" and names[-1].startswith("q4 ") and len(set(names)) == 4


def test_occlusion_value_attributes_the_change_in_the_prediction():
    def predict(texts):
        return np.array([10.0 * t.split().count("very") for t in texts])

    e = occlusion_value(predict, "very very good")
    assert e["value"] == 20.0
    assert e["attributions"] == [("very", 10.0), ("very", 10.0), ("good", 0.0)]
    assert render_markdown(e).startswith("**very** **very** good → 20")
