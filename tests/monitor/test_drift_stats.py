"""The statistics behind the monitor, on samples whose answer is known, and the settings' parsing."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tunekit.errors import ConfigError
from tunekit.monitor import MonitorSettings, load_settings, parse_since, stats

THRESHOLDS = {"p_value": 0.01, "ks_max_rows": 1000, "wasserstein_rel": 0.25}


def test_psi_is_zero_on_identical_samples_and_large_on_shifted_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    assert stats.psi_numeric(x, x) == pytest.approx(0.0, abs=1e-12)
    assert stats.psi_numeric(x, rng.normal(size=5000)) < 0.02  # same distribution, another sample
    assert stats.psi_numeric(x, rng.normal(1.0, 1.0, size=5000)) > 0.2
    assert stats.psi_categorical({"a": 50, "b": 50}, {"a": 5, "b": 5}) == pytest.approx(0.0, abs=1e-12)
    assert stats.psi_categorical({"a": 50, "b": 50}, {"a": 9, "b": 1}) > 0.2


def test_ks_p_value_is_small_for_a_shifted_normal_and_not_for_the_same_one():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=500)
    same = stats.numeric_test(ref, rng.normal(size=200), **THRESHOLDS)
    shifted = stats.numeric_test(ref, rng.normal(0.8, 1.0, size=200), **THRESHOLDS)
    assert same["test"] == shifted["test"] == "ks"
    assert same["p_value"] > 0.05 and not same["drifted"]
    assert shifted["p_value"] < 1e-6 and shifted["drifted"]
    assert shifted["production_mean"] - shifted["reference_mean"] == pytest.approx(0.8, abs=0.2)


def test_beyond_ks_max_rows_the_effect_size_decides():
    """5000 rows make a 0.05-std shift 'significant'; the Wasserstein distance (in std) says it is small."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=2000)
    tiny = stats.numeric_test(ref, rng.normal(0.1, 1.0, size=5000), **THRESHOLDS)
    large = stats.numeric_test(ref, rng.normal(1.0, 1.0, size=5000), **THRESHOLDS)
    assert tiny["test"] == "wasserstein" and tiny["wasserstein_rel"] < 0.25 and not tiny["drifted"]
    assert large["wasserstein_rel"] == pytest.approx(1.0, abs=0.1) and large["drifted"]


def test_categorical_test_flags_a_label_shift_but_not_the_same_proportions():
    ref = {"card": 300, "refund": 200, "transfer": 100}
    same = stats.categorical_test(ref, {"card": 150, "refund": 100, "transfer": 50}, p_value=0.01, min_js=0.1)
    shifted = stats.categorical_test(ref, {"card": 20, "refund": 30, "transfer": 250}, p_value=0.01, min_js=0.1)
    unseen = stats.categorical_test(ref, {"card": 100, "other": 100}, p_value=0.01, min_js=0.1)
    assert same["p_value"] > 0.9 and same["js_distance"] < 0.01 and not same["drifted"]
    assert shifted["p_value"] < 1e-10 and shifted["js_distance"] > 0.3 and shifted["drifted"]
    assert unseen["drifted"] and unseen["production_share"]["other"] == 0.5


def test_two_proportion_test():
    assert stats.two_proportions(10, 1000, 12, 1000) > 0.5
    assert stats.two_proportions(10, 1000, 100, 1000) < 1e-10
    assert stats.two_proportions(0, 0, 5, 10) == 1.0


def test_domain_classifier_auc_is_near_half_for_one_distribution_and_near_one_for_two():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(300, 16))
    same = stats.domain_auc(ref, rng.normal(size=(100, 16)))
    other = stats.domain_auc(ref, rng.normal(size=(100, 16)) + 1.0)
    assert abs(same["auc"] - 0.5) < 0.12
    assert other["auc"] > 0.95


def test_wilson_interval_matches_the_textbook_value():
    low, high = stats.wilson(8, 10)  # 80% of 10: the usual worked example
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert stats.wilson(0, 0) == (0.0, 1.0)


def test_live_classification_numbers_on_a_hand_example():
    given = ["a", "a", "b", "b"]
    predicted = ["a", "b", "b", "b"]
    q = stats.live_classification(given, predicted)
    # accuracy 3/4; F1(a) = 2·1·0.5/1.5 = 2/3, F1(b) = 2·(2/3)·1/(5/3) = 0.8; macro F1 = 11/15
    assert q["n"] == 4 and q["correct"] == 3 and q["accuracy"] == 0.75
    assert q["macro_f1"] == pytest.approx(11 / 15)
    assert q["accuracy_low"] < 0.75 < q["accuracy_high"] and q["macro_f1_low"] <= q["macro_f1"] <= q["macro_f1_high"]
    r = stats.live_regression([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 6.0])
    assert r["mae"] == 0.5 and r["rmse"] == pytest.approx(1.0)


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("7d", 604800), ("30m", 1800), ("90s", 90), ("2w", 1209600), ("1.5h", 5400)])
def test_since_parses_durations(text, seconds):
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["abc", "24", "h", "-1h", "0h", "1y", "24 hours", ""])
def test_since_rejects_anything_else_with_a_message(text):
    with pytest.raises(ConfigError, match=r"since: expected a positive duration such as 30m, 24h, 7d"):
        parse_since(text)
    with pytest.raises(ValidationError, match="expected a positive duration"):
        MonitorSettings(model="m@champion", since=text)


def test_settings_file_and_overrides_report_every_problem(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text("model: intent@champion\np_value: 0.05\ndomain_auc: 0.8\n")
    s = load_settings(path, since="7d")
    assert (s.model, s.p_value, s.domain_auc, s.window_seconds) == ("intent@champion", 0.05, 0.8, 604800)
    path.write_text("model: intent@champion\np_value: 2\nsince: soon\nthreshold: 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert "3 problem(s)" in message and "p_value" in message and "since" in message and "threshold" in message
