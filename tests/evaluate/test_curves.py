"""One-vs-rest ranking scores and the plots drawn from them."""

from __future__ import annotations

import numpy as np
import pytest

from tunekit.evaluate.curves import confusion_raw, one_vs_rest, roc_pr_plot

LABELS = ["card", "refund", "transfer", "unused"]
PNG = b"\x89PNG\r\n\x1a\n"


def perfect(n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Three classes present, the fourth never: each row's true class gets the top score."""
    y = np.arange(n) % 3
    probs = np.full((n, 4), 0.05)
    probs[np.arange(n), y] = 0.85
    return probs, y


def test_perfect_scores_and_skipped_class():
    probs, y = perfect()
    r = one_vs_rest(probs, y, LABELS)
    assert r["skipped"] == ["unused"]
    assert set(r["per_class"]) == {"card", "refund", "transfer"}
    assert all(c["roc_auc"] == 1.0 and c["average_precision"] == 1.0 and c["support"] == 10 for c in r["per_class"].values())
    assert r["macro_roc_auc"] == 1.0 and r["macro_average_precision"] == 1.0


def test_known_auc_and_macro_over_scored_classes_only():
    # class 0 positives score .9 and .4, negatives .6 and .1: 3 of 4 positive-negative pairs ordered right -> AUC .75
    probs = np.array([[0.9, 0.1, 0, 0], [0.4, 0.6, 0, 0], [0.6, 0.4, 0, 0], [0.1, 0.9, 0, 0]])
    y = np.array([0, 0, 1, 1])
    r = one_vs_rest(probs, y, LABELS)
    assert r["per_class"]["card"]["roc_auc"] == pytest.approx(0.75)
    assert r["per_class"]["refund"]["roc_auc"] == pytest.approx(0.75)
    # AP for card: ranked .9 (pos), .6 (neg), .4 (pos): precision 1 at recall .5, 2/3 at recall 1 -> (1 + 2/3) / 2
    assert r["per_class"]["card"]["average_precision"] == pytest.approx(5 / 6)
    assert r["skipped"] == ["transfer", "unused"] and r["macro_roc_auc"] == pytest.approx(0.75)


def test_nothing_scorable_gives_none():
    r = one_vs_rest(np.full((3, 4), 0.25), np.zeros(3, dtype=int), LABELS)
    assert r["per_class"] == {} and r["macro_roc_auc"] is None and len(r["skipped"]) == 4


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"shape \(30, 4\)"):
        one_vs_rest(np.zeros((30, 3)), np.zeros(30, dtype=int), LABELS)


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(0)
    probs, y = perfect()
    noisy = probs + rng.random(probs.shape)
    paths = [
        roc_pr_plot(noisy, y, LABELS, tmp_path / "roc_pr.png"),
        roc_pr_plot(noisy, y, LABELS, tmp_path / "roc_pr_worst.png", max_classes=2),
        confusion_raw(y, noisy.argmax(axis=1), LABELS, tmp_path / "confusion_raw.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000
