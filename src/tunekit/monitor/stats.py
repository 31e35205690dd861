"""The statistics of drift and live quality: each takes reference and production values, returns numbers.

Which test for which feature, and why:
- numbers (text length, confidence, predicted values): two-sample Kolmogorov-Smirnov while the
  production sample is small enough for its p-value to mean something; beyond that (thousands of
  rows make every hair's-breadth shift "significant") the Wasserstein distance in units of the
  reference's standard deviation, an effect size, decides;
- categories (predicted labels): Pearson's chi-square of production counts against the reference
  proportions (add-half smoothed, so a label never seen in the reference is a large but finite
  surprise), with the Jensen-Shannon distance as the effect size;
- the out-of-vocabulary rate: a two-proportion z-test on word counts plus the rise itself;
- embeddings: a domain classifier. If logistic regression can tell reference from production
  embeddings (cross-validated AUC well above 0.5), production texts are not like the training texts;
- PSI on request, for teams whose dashboards speak it.
Live quality: accuracy with a Wilson interval, macro F1 and regression errors with bootstrap intervals
(the metrics and the bootstrap of ``evaluate``, so offline and live numbers are computed alike).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from tunekit.evaluate.metrics import macro_f1, mae, rmse
from tunekit.evaluate.stats import bootstrap

_EPS = 1e-4  # floor of a bin's share in PSI, so an empty bin is a large finite term, not infinity


def numeric_test(ref, cur, *, p_value: float, ks_max_rows: int, wasserstein_rel: float) -> dict:
    """KS (up to ``ks_max_rows`` production rows) or relative Wasserstein distance (beyond) of two samples."""
    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    ks = sps.ks_2samp(ref, cur)
    std = float(ref.std())
    distance = float(sps.wasserstein_distance(ref, cur))
    rel = distance / std if std > 0 else (0.0 if distance == 0 else float("inf"))
    use_ks = len(cur) <= ks_max_rows
    return {
        "test": "ks" if use_ks else "wasserstein", "statistic": float(ks.statistic) if use_ks else rel,
        "p_value": float(ks.pvalue), "ks_statistic": float(ks.statistic), "wasserstein": distance, "wasserstein_rel": rel,
        "reference_mean": float(ref.mean()), "production_mean": float(cur.mean()), "n_reference": len(ref), "n_production": len(cur),
        "drifted": bool(ks.pvalue < p_value) if use_ks else bool(rel > wasserstein_rel),
        "threshold": f"p < {p_value:g}" if use_ks else f"Wasserstein > {wasserstein_rel:g} reference std",
    }


def categorical_test(ref_counts: dict[str, int], cur_counts: dict[str, int], *, p_value: float, min_js: float) -> dict:
    """Chi-square of production counts against smoothed reference proportions, and the JS distance."""
    cats = sorted(set(ref_counts) | set(cur_counts))
    ref = np.array([ref_counts.get(c, 0) for c in cats], dtype=float) + 0.5
    cur = np.array([cur_counts.get(c, 0) for c in cats], dtype=float)
    p_ref = ref / ref.sum()
    if len(cats) < 2 or cur.sum() == 0:
        chi2, p = 0.0, 1.0
    else:
        chi2, p = (float(x) for x in sps.chisquare(cur, cur.sum() * p_ref))
    js = float(jensenshannon(p_ref, cur / max(cur.sum(), 1), base=2)) if cur.sum() else 0.0
    return {
        "test": "chi-square", "statistic": chi2, "p_value": p, "js_distance": js, "n_production": int(cur.sum()),
        "reference_share": {c: float(s) for c, s in zip(cats, (ref - 0.5) / max((ref - 0.5).sum(), 1))},
        "production_share": {c: float(s) for c, s in zip(cats, cur / max(cur.sum(), 1))},
        "drifted": bool(p < p_value and js >= min_js), "threshold": f"p < {p_value:g} and Jensen-Shannon >= {min_js:g}",
    }


def two_proportions(k_ref: int, n_ref: int, k_cur: int, n_cur: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when either sample is empty)."""
    if n_ref == 0 or n_cur == 0:
        return 1.0
    pooled = (k_ref + k_cur) / (n_ref + n_cur)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    if se == 0:
        return 1.0
    z = (k_cur / n_cur - k_ref / n_ref) / se
    return float(2 * sps.norm.sf(abs(z)))


def psi_numeric(ref, cur, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    return _psi(r, c)


def psi_categorical(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> float:
    cats = sorted(set(ref_counts) | set(cur_counts))
    return _psi(np.array([ref_counts.get(c, 0) for c in cats]), np.array([cur_counts.get(c, 0) for c in cats]))


def _psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    r = np.clip(ref_counts / max(ref_counts.sum(), 1), _EPS, None)
    c = np.clip(cur_counts / max(cur_counts.sum(), 1), _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def domain_auc(ref_emb: np.ndarray, cur_emb: np.ndarray, seed: int = 0, folds: int = 5) -> dict:
    """Cross-validated ROC AUC of logistic regression telling production (1) from reference (0) embeddings.

    0.5: the two samples cannot be told apart; near 1: production is another kind of text. Classes
    are weighted to balance, so the AUC does not depend on the samples' sizes. Also returned: the
    cosine distance between the two samples' mean embeddings, and the out-of-fold scores (plotted).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([ref_emb, cur_emb]).astype(np.float64)
    y = np.r_[np.zeros(len(ref_emb)), np.ones(len(cur_emb))]
    k = min(folds, len(ref_emb), len(cur_emb))
    if k < 2:
        return {"auc": None, "n_reference": len(ref_emb), "n_production": len(cur_emb), "note": "too few rows for cross-validation"}
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    scores = cross_val_predict(clf, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    a, b = ref_emb.mean(0), cur_emb.mean(0)
    cosine = 1 - float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return {"auc": float(roc_auc_score(y, scores)), "centroid_cosine_distance": cosine, "folds": k,
            "n_reference": len(ref_emb), "n_production": len(cur_emb),
            "scores_reference": scores[y == 0].tolist(), "scores_production": scores[y == 1].tolist()}


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (scipy's); (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(fn: Callable[[np.ndarray, np.ndarray], float], a: np.ndarray, b: np.ndarray,
                       n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``fn(a[i], b[i])`` over rows resampled with replacement (``stats.bootstrap``)."""
    _, low, high = bootstrap(lambda i: fn(a[i], b[i]), len(a), n_resamples, seed)
    return float(low), float(high)


def live_classification(given: list[str], predicted: list[str], seed: int = 0) -> dict:
    """Accuracy (Wilson interval) and macro F1 (bootstrap interval) of predictions against feedback labels."""
    y, p = np.asarray(given, dtype=object), np.asarray(predicted, dtype=object)
    n, k = len(y), int((y == p).sum())
    if n == 0:
        return {"n": 0}
    low, high = wilson(k, n)
    f_low, f_high = bootstrap_interval(macro_f1, y, p, seed=seed)
    return {"n": n, "correct": k, "accuracy": k / n, "accuracy_low": low, "accuracy_high": high,
            "macro_f1": macro_f1(y, p), "macro_f1_low": f_low, "macro_f1_high": f_high}


def live_regression(given: list[float], predicted: list[float], seed: int = 0) -> dict:
    """RMSE and MAE (bootstrap intervals) of predicted values against feedback values."""
    y, p = np.asarray(given, dtype=float), np.asarray(predicted, dtype=float)
    if len(y) == 0:
        return {"n": 0}
    r_low, r_high = bootstrap_interval(rmse, y, p, seed=seed)
    m_low, m_high = bootstrap_interval(mae, y, p, seed=seed)
    return {"n": len(y), "rmse": rmse(y, p), "rmse_low": r_low, "rmse_high": r_high, "mae": mae(y, p), "mae_low": m_low, "mae_high": m_high}
