"""Baseline stage: TF-IDF (word 1-2 grams) + logistic regression on the same frozen splits; for
``task: regression`` the same TF-IDF features + ridge regression.

The fine-tuned model has to beat this to be promoted. It trains in seconds, and on many intent and
topic tasks it is within a few points of a fine-tuned transformer, so a model that does not beat it
is not worth its serving cost.

Sentence pairs (``text_pair``: paraphrase, entailment, "same intent?") get pair-aware features
(``PairFeatures``, in ``data.features``, which the label-noise check shares): each side's TF-IDF over one shared vocabulary, their element-wise product and
absolute difference, and their cosine similarity. A linear model over the bag of words of both
texts together cannot see whether the two texts agree, which is what such labels are about: on
pairs of BANKING77 utterances labelled same intent or not, the concatenation scored 0.49 macro-F1
(chance), the pair features 0.81 (``tests/test_baseline.py`` pins the gap on a small built set).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline

from tunekit import task_kinds
from tunekit.data.features import PairFeatures, tfidf
from tunekit.data.multitask import restrict_split
from tunekit.evaluate.metrics import best, classification_metrics, regression_metrics

__all__ = ["BaselineResult", "PairFeatures", "best", "run"]


@dataclass
class BaselineResult:
    name: str
    probs: np.ndarray | None  # test-set class probabilities, shape (n_test, n_labels); None for regression
    metrics: dict
    seconds: float
    values: np.ndarray | None = None  # regression: test-set predicted targets, shape (n_test,)


# ``best(baselines, primary)``, the baseline to beat (TF-IDF alone; zero- and k-shot prompting), is
# ``evaluate.metrics.best``: the best result on the primary metric in the metric's own direction.


def _inputs(ds) -> list:
    """What the baseline pipeline takes: the texts, or (text, text_pair) tuples for sentence pairs."""
    if "text_pair" in ds.column_names:
        return list(zip(ds["text"], ds["text_pair"]))
    return list(ds["text"])


def _features(data):
    """The feature step for ``data``: pair features when rows have a ``text_pair``, else TF-IDF of the text."""
    return PairFeatures() if "text_pair" in data.train.column_names else tfidf()


def _name(data, model: str) -> str:
    return f"tfidf-pair-{model}" if "text_pair" in data.train.column_names else f"tfidf-{model}"


def run(cfg, data) -> BaselineResult:
    """Fit on train, score on test; every label of the task keeps its column in ``probs``."""
    if task_kinds.kind(cfg.task).numeric:
        return run_regression(data)
    started = time.perf_counter()
    pipe = make_pipeline(
        _features(data),
        LogisticRegression(C=10.0, max_iter=2000),
    )
    y_train = np.asarray(list(data.train["label"]))
    pipe.fit(_inputs(data.train), y_train)
    partial = pipe.predict_proba(_inputs(data.test))
    probs = np.zeros((len(data.test), len(data.labels)), dtype=np.float32)
    probs[:, pipe.classes_] = partial
    probs = restrict_split(probs, data, data.test)  # multi-task: each row among its own task's labels
    y_test = np.asarray(list(data.test["label"]))
    metrics = classification_metrics(y_test, probs.argmax(1), data.labels)
    return BaselineResult(_name(data, "logreg"), probs, metrics, round(time.perf_counter() - started, 2))


def run_regression(data) -> BaselineResult:
    """TF-IDF (pair features for sentence pairs) + ridge (L2-regularised least squares, alpha 1) for a numeric target, fit on train."""
    started = time.perf_counter()
    pipe = make_pipeline(_features(data), Ridge(alpha=1.0))
    pipe.fit(_inputs(data.train), np.asarray(list(data.train["label"]), dtype=float))
    values = pipe.predict(_inputs(data.test)).astype(float)
    metrics = regression_metrics(np.asarray(list(data.test["label"]), dtype=float), values)
    return BaselineResult(_name(data, "ridge"), None, metrics, round(time.perf_counter() - started, 2), values=values)
