"""Does a confidence of 0.9 mean right 9 times in 10? Measure it, and fix it with one temperature.

Fine-tuned classifiers are usually overconfident. Temperature scaling divides the logits by a single
scalar T fitted on validation rows: it leaves every argmax (so accuracy and F1) unchanged and only
moves the confidences, which is what a serving threshold or an abstain rule relies on.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt
import numpy as np
from scipy.optimize import minimize_scalar

# T in [0.25, 10]. A fitted T of 0.08 on a small validation split once made the server answer
# probabilities of 4e-42 or exactly 1.0; outside this range the fit describes a few rows, not the model.
T_MIN, T_MAX = 0.25, 10.0
LOG_T_BOUNDS = (float(np.log(T_MIN)), float(np.log(T_MAX)))


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Top-label confidence in equal-width bins ``(lo, hi]`` (the first also holds 0), with the accuracy
    and mean confidence of each. Empty bins are kept, with ``None`` for both, so every plot has the
    same x axis."""
    probs, y_true = _check_probs(probs, y_true)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count,
                     "accuracy": float(correct[mask].mean()) if count else None,
                     "confidence": float(confidence[mask].mean()) if count else None})
    return bins


def ece_from_bins(bins: list[dict]) -> float:
    """Sum over bins of (share of rows) * |accuracy - mean confidence|."""
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Standard top-label ECE with equal-width bins; 0 means confidence matches accuracy in every bin."""
    return ece_from_bins(reliability_bins(probs, y_true, n_bins))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Subtracting the row max first keeps ``exp`` finite however large the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def apply_temperature(logits: np.ndarray, T: float) -> np.ndarray:
    """Probabilities of ``softmax(logits / T)``; T > 1 softens, T < 1 sharpens."""
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    return np.exp(log_softmax(np.asarray(logits, dtype=float) / T))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The T > 0 minimising the validation NLL of ``softmax(logits / T)``.

    The search runs over log T, so T stays positive and T = 0.5 and T = 2 are equally far from 1.
    Fit it on validation rows, never on test, or the test ECE flatters the model.
    """
    logits, y_true = _check_probs(np.asarray(logits, dtype=float), y_true)
    rows = np.arange(len(y_true))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t))[rows, y_true].mean())

    result = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def temperature_helps(logits: np.ndarray, y_true: np.ndarray, seed: int = 0) -> dict:
    """Does a temperature fitted on one half of validation lower the ECE on the other half, without
    raising its negative log-likelihood?

    Fitting T on all of validation and judging it there always looks good; judged on held-out
    rows it may not (a model that is already calibrated, or a small validation set). Two-fold
    cross-fit: the temperature is worth applying only when it lowers the held-out ECE on average
    and leaves the held-out NLL no worse (ECE alone can be gamed by a degenerate T on few rows).
    ``warning`` says in words why a temperature was refused or is suspect (it sits at a bound).
    """
    logits, y_true = _check_probs(np.asarray(logits, dtype=float), y_true)
    order = np.random.default_rng(seed).permutation(len(y_true))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    if min(len(h) for h in halves) < 10:
        return {"helps": False, "ece_held_out_before": None, "ece_held_out_after": None, "nll_held_out_before": None,
                "nll_held_out_after": None, "warning": f"not applied: {len(y_true)} validation rows are too few to judge a temperature "
                                                       "(at least 20 are needed)"}
    ece_before, ece_after, nll_before, nll_after = [], [], [], []
    for fit, held in (halves, halves[::-1]):
        t = fit_temperature(logits[fit], y_true[fit])
        rows = np.arange(len(held))
        ece_before.append(expected_calibration_error(np.exp(log_softmax(logits[held])), y_true[held]))
        ece_after.append(expected_calibration_error(apply_temperature(logits[held], t), y_true[held]))
        nll_before.append(float(-log_softmax(logits[held])[rows, y_true[held]].mean()))
        nll_after.append(float(-log_softmax(logits[held] / t)[rows, y_true[held]].mean()))
    eb, ea, nb, na = (float(np.mean(v)) for v in (ece_before, ece_after, nll_before, nll_after))
    warning = None
    if ea >= eb:
        warning = "not applied: it did not lower the calibration error on held-out validation rows"
    elif na > nb:
        warning = f"not applied: it lowered the held-out calibration error but raised the held-out log-loss ({nb:.4f} -> {na:.4f})"
    fitted = fit_temperature(logits, y_true)
    if warning is None and not T_MIN * 1.01 < fitted < T_MAX * 0.99:
        warning = (f"the fitted temperature {fitted:.3g} sits at the bound of [{T_MIN:g}, {T_MAX:g}]: the model's confidences are far off; "
                   "check the validation split's size and labels")
    return {"helps": ea < eb and na <= nb, "ece_held_out_before": eb, "ece_held_out_after": ea, "nll_held_out_before": nb,
            "nll_held_out_after": na, "warning": warning}


def reliability_diagram(bins_before: list[dict], bins_after: list[dict] | None, path: Path, title: str) -> Path:
    """Accuracy per confidence bin against the diagonal (perfect calibration); bars under the diagonal
    mean overconfidence. With ``bins_after``, the temperature-scaled bars sit beside the raw ones."""
    fig, ax = plt.subplots(figsize=(5, 5))
    series = [("before", bins_before, "#bbbbbb")] + ([("after temperature", bins_after, "#1f77b4")] if bins_after else [])
    for k, (name, bins, color) in enumerate(series):
        full = [b for b in bins if b["count"]]
        width = np.array([b["hi"] - b["lo"] for b in full]) / len(series)
        left = np.array([b["lo"] for b in full]) + k * width
        ax.bar(left, [b["accuracy"] for b in full], width=width, align="edge", color=color, edgecolor="white",
               label=f"{name} (ECE {ece_from_bins(bins):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="black", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _check_probs(scores: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, y_true = np.asarray(scores), np.asarray(y_true)
    if scores.ndim != 2 or y_true.ndim != 1 or len(scores) != len(y_true):
        raise ValueError(f"expected scores of shape (n, k) and n label ids, got {scores.shape} and {y_true.shape}")
    if len(y_true) == 0:
        raise ValueError("no rows to calibrate on")
    return scores, y_true
