"""Baseline stage: TF-IDF (word 1-2 grams) + logistic regression on the same frozen splits.

The fine-tuned model has to beat this to be promoted. It trains in seconds, and on many intent and
topic tasks it is within a few points of a fine-tuned transformer, so a model that does not beat it
is not worth its serving cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from tunekit.evaluate.metrics import classification_metrics

__all__ = ["BaselineResult", "run"]


@dataclass
class BaselineResult:
    name: str
    probs: np.ndarray  # test-set class probabilities, shape (n_test, n_labels)
    metrics: dict
    seconds: float


def _texts(ds) -> list[str]:
    texts = list(ds["text"])
    if "text_pair" in ds.column_names:  # a pair becomes one document; the marker keeps the halves apart
        texts = [f"{a} ||| {b}" for a, b in zip(texts, ds["text_pair"])]
    return texts


def run(cfg, data) -> BaselineResult:
    """Fit on train, score on test; every label of the task keeps its column in ``probs``."""
    started = time.perf_counter()
    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=10.0, max_iter=2000),
    )
    y_train = np.asarray(list(data.train["label"]))
    pipe.fit(_texts(data.train), y_train)
    partial = pipe.predict_proba(_texts(data.test))
    probs = np.zeros((len(data.test), len(data.labels)), dtype=np.float32)
    probs[:, pipe.classes_] = partial
    y_test = np.asarray(list(data.test["label"]))
    metrics = classification_metrics(y_test, probs.argmax(1), data.labels)
    return BaselineResult("tfidf-logreg", probs, metrics, round(time.perf_counter() - started, 2))
