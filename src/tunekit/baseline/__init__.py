"""Baseline stage: TF-IDF (word 1-2 grams) + logistic regression on the same frozen splits; for
``task: regression`` the same TF-IDF features + ridge regression.

The fine-tuned model has to beat this to be promoted. It trains in seconds, and on many intent and
topic tasks it is within a few points of a fine-tuned transformer, so a model that does not beat it
is not worth its serving cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline

from tunekit import task_kinds
from tunekit.data.multitask import restrict_split
from tunekit.evaluate.metrics import best, classification_metrics, regression_metrics

__all__ = ["BaselineResult", "best", "run"]


@dataclass
class BaselineResult:
    name: str
    probs: np.ndarray | None  # test-set class probabilities, shape (n_test, n_labels); None for regression
    metrics: dict
    seconds: float
    values: np.ndarray | None = None  # regression: test-set predicted targets, shape (n_test,)


# ``best(baselines, primary)``, the baseline to beat (TF-IDF alone; zero- and k-shot prompting), is
# ``evaluate.metrics.best``: the best result on the primary metric in the metric's own direction.


def _texts(ds) -> list[str]:
    texts = list(ds["text"])
    if "text_pair" in ds.column_names:  # a pair becomes one document; the marker keeps the halves apart
        texts = [f"{a} ||| {b}" for a, b in zip(texts, ds["text_pair"])]
    return texts


def _vectoriser() -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)


def run(cfg, data) -> BaselineResult:
    """Fit on train, score on test; every label of the task keeps its column in ``probs``."""
    if task_kinds.kind(cfg.task).numeric:
        return run_regression(data)
    started = time.perf_counter()
    pipe = make_pipeline(
        _vectoriser(),
        LogisticRegression(C=10.0, max_iter=2000),
    )
    y_train = np.asarray(list(data.train["label"]))
    pipe.fit(_texts(data.train), y_train)
    partial = pipe.predict_proba(_texts(data.test))
    probs = np.zeros((len(data.test), len(data.labels)), dtype=np.float32)
    probs[:, pipe.classes_] = partial
    probs = restrict_split(probs, data, data.test)  # multi-task: each row among its own task's labels
    y_test = np.asarray(list(data.test["label"]))
    metrics = classification_metrics(y_test, probs.argmax(1), data.labels)
    return BaselineResult("tfidf-logreg", probs, metrics, round(time.perf_counter() - started, 2))


def run_regression(data) -> BaselineResult:
    """TF-IDF + ridge (L2-regularised least squares, alpha 1) for a numeric target, fit on train."""
    started = time.perf_counter()
    pipe = make_pipeline(_vectoriser(), Ridge(alpha=1.0))
    pipe.fit(_texts(data.train), np.asarray(list(data.train["label"]), dtype=float))
    values = pipe.predict(_texts(data.test)).astype(float)
    metrics = regression_metrics(np.asarray(list(data.test["label"]), dtype=float), values)
    return BaselineResult("tfidf-ridge", None, metrics, round(time.perf_counter() - started, 2), values=values)
