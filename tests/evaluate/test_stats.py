"""Paired comparisons of two classifiers on planted differences whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from tunekit.evaluate.metrics import classification_metrics
from tunekit.evaluate.stats import compare_metrics, example_diff, mcnemar, paired_bootstrap

LABELS = ["card", "refund", "transfer", "other"]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def _wrong(y: np.ndarray) -> np.ndarray:
    return (y + 1) % len(LABELS)


def planted(fixed: int, broken: int, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a is right on rows 0..n/2-1 only; b fixes ``fixed`` of a's wrong rows and breaks ``broken`` of its right ones."""
    y = np.random.default_rng(seed).integers(0, len(LABELS), n)
    a = np.where(np.arange(n) < n // 2, y, _wrong(y))
    b = a.copy()
    b[n // 2: n // 2 + fixed] = y[n // 2: n // 2 + fixed]
    b[:broken] = _wrong(y[:broken])
    return y, a, b


def test_bootstrap_finds_a_clean_gain():
    y, a, b = planted(fixed=10, broken=0)  # b right on exactly 10 more rows of 200: +0.05
    r = paired_bootstrap(y, a, b, accuracy, n_resamples=1000, seed=0)
    assert (r["a"], r["b"]) == (0.5, 0.55) and r["diff"] == pytest.approx(0.05)
    # the gap per resample is (draws of the 10 fixed rows) / 200, Binomial(200, .05) / 200: about .02 to .08
    assert 0 < r["low"] < 0.05 < r["high"] < 0.1
    assert r["p_value"] < 0.01


def test_bootstrap_same_gain_with_churn_is_not_significant():
    y, a, b = planted(fixed=40, broken=30)  # still +0.05 net, but 70 rows disagree: sd of the gap ~ .042
    r = paired_bootstrap(y, a, b, accuracy, n_resamples=1000, seed=0)
    assert r["diff"] == pytest.approx(0.05)
    assert r["low"] < 0 < 0.05 < r["high"]
    assert 0.1 < r["p_value"] <= 1


def test_bootstrap_identical_predictions():
    y, a, _ = planted(fixed=0, broken=0)
    r = paired_bootstrap(y, a, a.copy(), accuracy, n_resamples=200)
    assert (r["diff"], r["low"], r["high"], r["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_is_seeded():
    y, a, b = planted(fixed=20, broken=12)
    first = paired_bootstrap(y, a, b, accuracy, n_resamples=300, seed=7)
    assert paired_bootstrap(y, a, b, accuracy, n_resamples=300, seed=7) == first
    assert paired_bootstrap(y, a, b, accuracy, n_resamples=300, seed=8)["low"] != first["low"]


def test_bootstrap_rejects_unpaired_rows():
    y, a, b = planted(fixed=1, broken=0)
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap(y, a, b[:-1], accuracy)


def test_compare_metrics_matches_classification_metrics():
    y, a, b = planted(fixed=30, broken=5, n=120)
    out = compare_metrics(y, a, b, LABELS, n_resamples=50, seed=0)
    assert set(out) == {"accuracy", "macro_f1", "balanced_accuracy", "mcc"}
    base, model = classification_metrics(y, a, LABELS), classification_metrics(y, b, LABELS)
    for name, r in out.items():
        assert r["a"] == pytest.approx(base[name]) and r["b"] == pytest.approx(model[name])
        assert r["diff"] == pytest.approx(model[name] - base[name]) and r["low"] <= r["high"]


def test_compare_metrics_rejects_unknown_label_ids():
    y, a, b = planted(fixed=1, broken=0, n=20)
    b[3] = len(LABELS)
    with pytest.raises(ValueError, match="pred_model holds label id 4, outside the 4 labels"):
        compare_metrics(y, a, b, LABELS, n_resamples=5)


def _table(b01: int, b10: int, both_right: int, both_wrong: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in the order: a right b wrong, a wrong b right, both right, both wrong."""
    y = np.zeros(b01 + b10 + both_right + both_wrong, dtype=int)
    a_right = np.repeat([True, False, True, False], [b01, b10, both_right, both_wrong])
    b_right = np.repeat([False, True, True, False], [b01, b10, both_right, both_wrong])
    return y, np.where(a_right, 0, 1), np.where(b_right, 0, 2)


def test_mcnemar_exact():
    r = mcnemar(*_table(b01=10, b10=0, both_right=50, both_wrong=5))
    assert (r["a_right_b_wrong"], r["a_wrong_b_right"], r["both_right"], r["both_wrong"]) == (10, 0, 50, 5)
    assert r["method"] == "exact" and r["statistic"] is None
    assert r["p_value"] == pytest.approx(2 * 0.5**10)  # 0.001953125


def test_mcnemar_chi2():
    r = mcnemar(*_table(b01=30, b10=60, both_right=100, both_wrong=10))
    assert (r["a_right_b_wrong"], r["a_wrong_b_right"], r["both_right"], r["both_wrong"]) == (30, 60, 100, 10)
    assert r["method"] == "chi2"
    assert r["statistic"] == pytest.approx(29**2 / 90)  # (|30 - 60| - 1)^2 / (30 + 60)
    assert r["p_value"] == pytest.approx(sps.chi2.sf(29**2 / 90, df=1))
    assert r["p_value"] < 0.01


def test_mcnemar_no_disagreement():
    r = mcnemar(*_table(b01=0, b10=0, both_right=5, both_wrong=3))
    assert r["p_value"] == 1.0 and r["method"] == "exact"


def test_example_diff_groups_the_right_rows():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    a = np.array([0, 0, 2, 0, 0, 0, 0, 3])  # wrong on rows 1, 3, 5, 6
    b = np.array([0, 1, 0, 3, 1, 2, 0, 3])  # wrong on rows 2, 4, 5, 6
    ids, texts = [f"r{i}" for i in range(8)], [f"text {i}" for i in range(8)]
    d = example_diff(ids, texts, y, a, b, LABELS, max_examples=10)
    assert d["counts"] == {"fixed": 2, "broken": 2, "both_wrong": 2, "both_right": 2}
    assert sum(d["counts"].values()) == len(y)
    assert [e["id"] for e in d["fixed"]] == ["r1", "r3"]
    assert [e["id"] for e in d["broken"]] == ["r2", "r4"]
    assert d["both_wrong"][1] == {"id": "r6", "text": "text 6", "label": "transfer", "a": "card", "b": "card"}
    assert d["fixed"][0] == {"id": "r1", "text": "text 1", "label": "refund", "a": "card", "b": "refund"}


def test_example_diff_caps_and_seeds_the_sample():
    y, a, b = planted(fixed=40, broken=30)
    ids, texts = list(range(len(y))), [str(i) for i in range(len(y))]
    d = example_diff(ids, texts, y, a, b, LABELS, max_examples=5, seed=3)
    assert d["counts"]["fixed"] == 40 and len(d["fixed"]) == 5
    assert all(100 <= e["id"] < 140 for e in d["fixed"]) and all(e["id"] < 30 for e in d["broken"])
    assert [e["id"] for e in d["fixed"]] == sorted(e["id"] for e in d["fixed"])
    assert example_diff(ids, texts, y, a, b, LABELS, max_examples=5, seed=3) == d
