"""Label-noise candidates: rows whose label a cross-validated baseline confidently disagrees with.

A mislabelled training row teaches the model the wrong answer, and a mislabelled test row marks a
right answer as wrong, so label noise both caps the accuracy a model can reach and makes the
evaluation lie about it. Finding such rows by reading thousands of examples is hopeless; finding
them among the twenty rows a model is most sure about is a few minutes' work.

The method is a simplified confident learning (Northcutt et al., the idea behind Cleanlab):

1. Out-of-fold class probabilities from the same TF-IDF + logistic regression as the baseline (for
   sentence pairs its pair features, ``data.features.PairFeatures``), so no row is scored by a model
   that saw its own label.
2. A per-class threshold ``t_j``: the mean out-of-fold probability of class ``j`` over the rows
   labelled ``j``. A class the model is generally unsure of gets a low bar, a crisp class a high one.
3. A row labelled ``i`` is a candidate when some other class ``j`` has ``p_j >= t_j`` and
   ``p_j > p_i``; candidates are ranked by the margin ``p_j - p_i``.

This only *lists* candidates for a person to review: nothing is relabelled or dropped
automatically, because a confident disagreement is sometimes a hard, correctly labelled row.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from tunekit.data.features import PairFeatures, tfidf

__all__ = ["for_prepared", "label_noise_candidates", "markdown"]

METHOD = (
    "confident learning (simplified): out-of-fold probabilities from TF-IDF (word 1-2 grams) + "
    "logistic regression; a row labelled i is a candidate when another class j has p_j >= t_j "
    "(mean p_j over rows labelled j) and p_j > p_i; ranked by p_j - p_i"
)


def label_noise_candidates(texts: list[str], labels: list[int], label_names: list[str], ids: list[str],
                           folds: int = 5, seed: int = 0, top: int = 20, multitask: bool = False,
                           pairs: list[str] | None = None) -> dict:
    """The ``top`` rows most likely to be mislabelled, for a person to review (nothing is changed).

    ``pairs``: the second text of each row for sentence-pair data; candidates then show both texts.

    Classes with fewer than 2 rows cannot be cross-validated; they are left out of the analysis and
    listed under ``skipped_labels``, and ``n_rows`` counts only the rows that were analysed.
    """
    _check_lengths(texts, labels, label_names, ids)
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"texts and pairs must have the same length, got {len(texts)} and {len(pairs)}")
    counts = Counter(labels)
    skipped = sorted(label for label, n in counts.items() if n < 2)
    keep = [i for i, label in enumerate(labels) if counts[label] >= 2]
    result = {"n_candidates": 0, "share": 0.0, "candidates": [], "method": METHOD, "n_rows": len(keep),
              "folds": 0, "skipped_labels": [label_names[j] for j in skipped]}
    if len({labels[i] for i in keep}) < 2:  # one class (or none) left: there is nothing to confuse it with
        return result
    y = np.asarray([labels[i] for i in keep])
    inputs = [(texts[i], pairs[i]) for i in keep] if pairs is not None else [texts[i] for i in keep]
    classes, probs, result["folds"] = _out_of_fold(inputs, y, folds, seed, min(counts[label] for label in set(y.tolist())),
                                                   pairs is not None)
    if multitask:  # a row can only be mislabelled within its own task
        from tunekit.data.multitask import restrict, row_tasks

        names = [label_names[int(c)] for c in classes]
        probs = restrict(probs, row_tasks(np.searchsorted(classes, y), names), names)
    found = _candidates(probs, np.searchsorted(classes, y))
    result["n_candidates"] = len(found)
    result["share"] = len(found) / len(keep)
    result["candidates"] = [
        {"id": ids[keep[row]], "text": texts[keep[row]], **({"text_pair": pairs[keep[row]]} if pairs is not None else {}),
         "label": label_names[labels[keep[row]]],
         "suggested": label_names[int(classes[j])], "label_prob": round(p_i, 4), "suggested_prob": round(p_j, 4),
         "margin": round(p_j - p_i, 4)}
        for row, j, p_i, p_j in found[:top]
    ]
    return result


def _check_lengths(texts: list[str], labels: list[int], label_names: list[str], ids: list[str]) -> None:
    """Mismatched inputs are a caller's bug; say which lengths disagree rather than misalign rows."""
    if not len(texts) == len(labels) == len(ids):
        raise ValueError(f"texts, labels and ids must have the same length, got {len(texts)}, {len(labels)} and {len(ids)}")
    bad = sorted({label for label in labels if not 0 <= label < len(label_names)})
    if bad:
        raise ValueError(f"label ids {bad[:5]} are out of range for {len(label_names)} label names")


def _out_of_fold(texts: list, y: np.ndarray, folds: int, seed: int, smallest: int, pairs: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Class ids, out-of-fold probabilities (one column per class id) and the number of folds used.

    Stratified folds need every class in every fold, so the fold count drops to the smallest class.
    """
    folds = max(2, min(folds, smallest))
    pipe = make_pipeline(PairFeatures(seed=seed) if pairs else tfidf(), LogisticRegression(C=10.0, max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(pipe, texts, y, cv=cv, method="predict_proba")
    return np.unique(y), probs, folds


def _candidates(probs: np.ndarray, given: np.ndarray) -> list[tuple[int, int, float, float]]:
    """``(row, suggested column, p_given, p_suggested)`` for each candidate, largest margin first.

    Among the classes that clear their threshold and beat the given label, the most probable one
    is suggested.
    """
    n_classes = probs.shape[1]
    thresholds = np.array([probs[given == j, j].mean() for j in range(n_classes)])
    p_given = probs[np.arange(len(given)), given]
    confident = (probs >= thresholds) & (probs > p_given[:, None])
    confident[np.arange(len(given)), given] = False
    found = []
    for row in np.flatnonzero(confident.any(axis=1)):
        j = int(np.where(confident[row], probs[row], -1.0).argmax())
        found.append((int(row), j, float(p_given[row]), float(probs[row, j])))
    found.sort(key=lambda c: (-(c[3] - c[2]), c[0]))
    return found


def for_prepared(prepared, seed: int = 0) -> dict | None:
    """Candidates for the training split of ``prepared``, cached beside the frozen splits (they
    depend only on those rows and the seed) and appended to the data report. Sentence pairs are
    scored with the pair baseline's features. None for regression, which has no labels to confuse."""
    if not prepared.labels:
        return None
    pairs = "text_pair" in prepared.train.column_names
    cache = prepared.directory / f"label_noise-{seed}{'-pairs' if pairs else ''}.json"  # pair results of older versions came from no model
    if cache.is_file():
        return json.loads(cache.read_text())
    train = prepared.train
    result = label_noise_candidates(list(train["text"]), list(train["label"]), prepared.labels, list(train["id"]), seed=seed,
                                    multitask=prepared.multitask, pairs=list(train["text_pair"]) if pairs else None)
    cache.write_text(json.dumps(result, indent=2))
    return result


def markdown(result: dict, limit: int = 15) -> str:
    """The candidates as a Markdown section (used by the data report and the report card)."""
    if not result or not result["candidates"]:
        return ""
    lines = [f"## Label-noise candidates ({result['n_candidates']} training rows, {result['share']:.1%}; review them, nothing was changed)",
             "", "| id | text | label | suggested | margin |", "|---|---|---|---|---:|"]
    for c in result["candidates"][:limit]:
        text = c["text"] + (f" ⟷ {c['text_pair']}" if "text_pair" in c else "")  # a pair: both texts, in order
        text = text.replace("|", "/").replace("\n", " ")[:160]
        lines.append(f"| {c['id']} | {text} | {c['label']} | {c['suggested']} | {c['margin']:.2f} |")
    return "\n".join(lines) + "\n"
