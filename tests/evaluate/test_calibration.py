"""Calibration numbers on constructions whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tunekit.evaluate import calibration
from tunekit.evaluate.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    reliability_diagram,
)

# Five rows, three classes, four bins [0, .25], (.25, .5], (.5, .75], (.75, 1].
PROBS = np.array([
    [0.90, 0.05, 0.05],  # conf .9, predicts 0, y 0: right  -> bin 4
    [0.80, 0.10, 0.10],  # conf .8, predicts 0, y 1: wrong  -> bin 4
    [0.60, 0.30, 0.10],  # conf .6, predicts 0, y 0: right  -> bin 3
    [0.20, 0.70, 0.10],  # conf .7, predicts 1, y 1: right  -> bin 3
    [0.50, 0.30, 0.20],  # conf .5, predicts 0, y 2: wrong  -> bin 2 (bins are (lo, hi], so .5 is in (.25, .5])
])
Y = np.array([0, 1, 0, 1, 2])


def test_ece_by_hand():
    # bin 4: 2 rows, accuracy 1/2, confidence (.9 + .8) / 2 = .85 -> 2/5 * |.5 - .85|  = .14
    # bin 3: 2 rows, accuracy 2/2, confidence (.6 + .7) / 2 = .65 -> 2/5 * |1 - .65|  = .14
    # bin 2: 1 row,  accuracy 0,   confidence .5                  -> 1/5 * |0 - .5|   = .10
    # ECE = .14 + .14 + .10 = .38
    assert expected_calibration_error(PROBS, Y, n_bins=4) == pytest.approx(0.38)
    bins = reliability_bins(PROBS, Y, n_bins=4)
    assert [b["count"] for b in bins] == [0, 1, 2, 2]
    assert bins[0]["accuracy"] is None and bins[1]["confidence"] == pytest.approx(0.5)
    assert bins[3]["accuracy"] == pytest.approx(0.5) and bins[3]["confidence"] == pytest.approx(0.85)


def test_zero_confidence_lands_in_first_bin():
    bins = reliability_bins(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([0, 0]), n_bins=4)
    assert [b["count"] for b in bins] == [1, 0, 0, 1]


def test_ece_zero_when_perfectly_calibrated():
    # 10 rows at confidence .8 of which 8 right, 10 rows at .6 of which 6 right
    probs = np.array([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 10)
    y = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)


def test_bins_count_every_row():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=137)
    bins = reliability_bins(probs, rng.integers(0, 5, 137), n_bins=15)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 137
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0


def _overconfident(seed: int, n: int = 1000, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), logits reported as 3 z: the true temperature is 3."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, k))
    y = (rng.random((n, 1)) < apply_temperature(z, 1.0).cumsum(axis=1)).argmax(axis=1)
    return 3 * z, y


def test_temperature_recovers_planted_value():
    logits, y = _overconfident(seed=0)
    T = fit_temperature(logits, y)
    assert T == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(apply_temperature(logits, 1.0), y)
    after = expected_calibration_error(apply_temperature(logits, T), y)
    assert after < before / 2


def test_temperature_keeps_argmax_and_handles_huge_logits():
    logits, _ = _overconfident(seed=1, n=50)
    scaled = apply_temperature(logits * 1000, 7.0)  # exp(3000) would overflow without the max shift
    assert np.isfinite(scaled).all() and np.allclose(scaled.sum(axis=1), 1.0)
    assert (scaled.argmax(axis=1) == logits.argmax(axis=1)).all()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(logits, 0.0)


def test_reliability_diagram_writes_png(tmp_path):
    logits, y = _overconfident(seed=2, n=200)
    before = reliability_bins(apply_temperature(logits, 1.0), y)
    after = reliability_bins(apply_temperature(logits, 3.0), y)
    for name, second in [("both.png", after), ("before.png", None)]:
        path = reliability_diagram(before, second, tmp_path / name, "test")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_temperature_is_applied_only_when_it_helps_on_held_out_rows():
    """Overconfident logits: a fitted temperature helps on the other half. Halves miscalibrated in
    opposite directions: the temperature fitted on one hurts the other, so it is not applied."""
    rng = np.random.default_rng(0)
    n, k = 600, 4
    clean = rng.normal(size=(n, k)) * 2.0
    y = np.array([rng.choice(k, p=np.exp(r - r.max()) / np.exp(r - r.max()).sum()) for r in clean])  # calibrated by construction
    assert calibration.temperature_helps(clean * 3.0, y)["helps"]  # 3x sharper than the truth: softening helps
    order = np.random.default_rng(0).permutation(n)  # the same halves temperature_helps draws with seed 0
    mixed = clean.copy()
    mixed[order[: n // 2]] *= 3.0   # one half overconfident
    mixed[order[n // 2 :]] /= 3.0   # the other underconfident
    verdict = calibration.temperature_helps(mixed, y)
    assert not verdict["helps"] and verdict["ece_held_out_after"] > verdict["ece_held_out_before"]


def test_temperature_stays_within_bounds_and_a_degenerate_fit_is_refused():
    """Underconfident logits on a handful of rows once fitted T = 0.08 (probabilities of 4e-42 or 1.0):
    the fit is bounded at 0.25, and on 12 validation rows it is not applied, with a warning that says why."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 12)
    logits = np.eye(3)[y] * 0.05  # right every time, but almost uniform: the NLL wants T -> 0
    assert fit_temperature(logits, y) == pytest.approx(calibration.T_MIN, rel=1e-3)
    verdict = calibration.temperature_helps(logits, y)
    assert not verdict["helps"] and "too few" in verdict["warning"]


def test_a_helpful_temperature_lowers_held_out_error_and_log_loss():
    logits, y = _overconfident(seed=4, n=400)
    verdict = calibration.temperature_helps(logits, y)
    assert verdict["helps"] and verdict["warning"] is None
    assert verdict["nll_held_out_after"] < verdict["nll_held_out_before"] and verdict["ece_held_out_after"] < verdict["ece_held_out_before"]
