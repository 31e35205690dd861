"""The drift checks: one per feature, each a dict with its test, numbers, verdict and alert text.

Every check has ``name`` (stable, used as the gauge label), ``title``, ``test``, ``statistic``,
``p_value`` (or None), ``threshold`` (in words), ``drifted`` and ``alert`` (the line for
``MonitorResult.alerts``, None when it did not drift), plus the numbers behind them. ``plot_data``
collects the production values the report's plots draw.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np

from tunekit.errors import ModelError
from tunekit.monitor import reference as reference_mod
from tunekit.monitor import stats
from tunekit.monitor.embed import Embedder, for_reference
from tunekit.monitor.production import Traffic
from tunekit.monitor.settings import MonitorSettings


def checks(s: MonitorSettings, ref: dict, ref_emb: np.ndarray | None, traffic: Traffic,
           embedder: Embedder | None) -> tuple[list[dict], dict]:
    """Every drift check that applies to the reference's task, and the data for the plots."""
    numeric = partial(stats.numeric_test, p_value=s.p_value, ks_max_rows=s.ks_max_rows, wasserstein_rel=s.wasserstein_rel)
    lengths = reference_mod.lengths(traffic.texts)
    found = [_check("length_words", "text length (words)", numeric(ref["length"]["words"], lengths["words"])),
             _check("length_chars", "text length (characters)", numeric(ref["length"]["chars"], lengths["chars"])),
             _oov(s, ref, traffic)]
    plot = {"length_words": lengths["words"]}
    if s.psi:
        _add_psi(found[0], stats.psi_numeric(ref["length"]["words"], lengths["words"]), s)
        _add_psi(found[1], stats.psi_numeric(ref["length"]["chars"], lengths["chars"]), s)
    preds = ref.get("predictions") or {}
    if "labels" in preds:
        counts = Counter(traffic.labels)
        found.append(_check("predicted_label", "predicted-label distribution",
                            stats.categorical_test(preds["labels"], counts, p_value=s.p_value, min_js=s.label_js)))
        found.append(_check("confidence", "confidence (max probability)", numeric(preds["confidence"], traffic.scores)))
        found.append(_confidence_drop(s, preds["confidence"], traffic.scores))
        if s.psi:
            _add_psi(found[-3], stats.psi_categorical(preds["labels"], counts), s)
            _add_psi(found[-2], stats.psi_numeric(preds["confidence"], traffic.scores), s)
        plot |= {"labels": dict(counts), "confidence": traffic.scores}
    if "values" in preds:
        found.append(_check("predicted_value", "predicted value", numeric(preds["values"], traffic.values)))
        if s.psi:
            _add_psi(found[-1], stats.psi_numeric(preds["values"], traffic.values), s)
        plot["values"] = traffic.values
    if ref_emb is not None:
        check, scores = _embedding(s, ref, ref_emb, traffic, embedder)
        found.append(check)
        plot["domain_scores"] = scores
    for check in found:
        check["alert"] = _alert(check) if check["drifted"] else None
    return found, plot


def _check(name: str, title: str, result: dict) -> dict:
    return {"name": name, "title": title, **result}


def _oov(s: MonitorSettings, ref: dict, traffic: Traffic) -> dict:
    """Out-of-vocabulary words: significant (two-proportion z-test on word counts) and large enough a rise."""
    vocab = set(ref["vocabulary"]["words"])
    cur = reference_mod.oov_counts(traffic.texts, vocab)
    base = ref["oov"]
    ref_rate, cur_rate = base["oov_words"] / max(base["words"], 1), cur["oov_words"] / max(cur["words"], 1)
    p = stats.two_proportions(base["oov_words"], base["words"], cur["oov_words"], cur["words"])
    return {"name": "oov_rate", "title": "out-of-vocabulary rate", "test": "two-proportion z", "statistic": cur_rate - ref_rate,
            "p_value": p, "reference_rate": ref_rate, "production_rate": cur_rate, "reference_source": base["source"],
            "n_production_words": cur["words"], "drifted": bool(p < s.p_value and cur_rate - ref_rate >= s.oov_increase),
            "threshold": f"p < {s.p_value:g} and a rise of at least {s.oov_increase:g}"}


def _confidence_drop(s: MonitorSettings, ref_conf: list[float], cur_conf: list[float]) -> dict:
    ref_mean, cur_mean = float(np.mean(ref_conf)), float(np.mean(cur_conf)) if cur_conf else float("nan")
    drop = ref_mean - cur_mean
    return {"name": "confidence_drop", "title": "mean confidence drop", "test": "difference of means", "statistic": drop,
            "p_value": None, "reference_mean": ref_mean, "production_mean": cur_mean,
            "drifted": bool(drop >= s.confidence_drop), "threshold": f"drop >= {s.confidence_drop:g}"}


def _embedding(s: MonitorSettings, ref: dict, ref_emb: np.ndarray, traffic: Traffic, embedder: Embedder | None) -> tuple[dict, dict]:
    """Embed a sample of production texts like the reference's, and train a domain classifier on both."""
    embedder = for_reference(ref["embeddings"]["embedder"], embedder)
    rng = np.random.default_rng(s.seed)
    idx = np.sort(rng.permutation(len(traffic.texts))[:s.embed_sample])
    cur_emb = np.asarray(embedder([traffic.texts[i] for i in idx]), dtype=np.float32)
    if cur_emb.shape[1] != ref_emb.shape[1]:
        raise ModelError(f"production embeddings have {cur_emb.shape[1]} dimensions, the reference's {ref_emb.shape[1]}: not the same embedder")
    result = stats.domain_auc(ref_emb, cur_emb, seed=s.seed)
    scores = {"reference": result.pop("scores_reference", []), "production": result.pop("scores_production", [])}
    auc = result["auc"]
    check = {"name": "embedding", "title": f"embedding drift ({embedder.name})", "test": "domain classifier AUC", "statistic": auc,
             "p_value": None, **result, "drifted": bool(auc is not None and auc >= s.domain_auc), "threshold": f"AUC >= {s.domain_auc:g}"}
    return check, scores


def _add_psi(check: dict, psi: float, s: MonitorSettings) -> None:
    check["psi"] = psi
    if psi >= s.psi_threshold:
        check["drifted"] = True
        check["threshold"] += f" (or PSI >= {s.psi_threshold:g})"


def _alert(c: dict) -> str:
    """One line saying what drifted, by how much, against which threshold."""
    if c["name"] == "embedding":
        return (f"{c['title']}: a classifier tells production from training texts with AUC {c['statistic']:.3f} "
                f"(threshold {c['threshold']}); production texts are unlike the training data")
    if c["name"] == "oov_rate":
        return (f"{c['title']}: {c['production_rate']:.1%} of production words are unknown to the training vocabulary, "
                f"{c['reference_rate']:.1%} on {c['reference_source']} (p = {c['p_value']:.3g}; {c['threshold']})")
    if c["name"] == "predicted_label":
        return (f"{c['title']}: chi-square p = {c['p_value']:.3g}, Jensen-Shannon distance {c['js_distance']:.3f} "
                f"({c['threshold']}); {_largest_shift(c)}")
    if c["name"] == "confidence_drop":
        return (f"{c['title']}: mean confidence {c['production_mean']:.3f} in production vs {c['reference_mean']:.3f} "
                f"on validation ({c['threshold']})")
    how = f"KS p = {c['p_value']:.3g}" if c["test"] == "ks" else f"Wasserstein distance {c['wasserstein_rel']:.2f} reference std"
    psi = f", PSI {c['psi']:.3f}" if "psi" in c else ""
    return (f"{c['title']}: {how}{psi} ({c['threshold']}); mean {c['production_mean']:.3g} in production vs "
            f"{c['reference_mean']:.3g} in the reference")


def _largest_shift(c: dict) -> str:
    ref, cur = c["reference_share"], c["production_share"]
    label = max(cur, key=lambda k: abs(cur[k] - ref.get(k, 0.0)))
    return f"largest change: {label} {ref.get(label, 0.0):.1%} -> {cur[label]:.1%}"
