"""Text features for the linear references (the TF-IDF baseline and the label-noise check).

``tfidf()`` turns one text into word 1-2 gram TF-IDF; ``PairFeatures`` turns a sentence pair into
features a linear model can use to tell whether the two texts agree (see its docstring).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from threadpoolctl import threadpool_limits

__all__ = ["PairFeatures", "tfidf"]


def tfidf() -> TfidfVectorizer:
    """TF-IDF of word 1-2 grams (sublinear term frequency): the text features of the baseline."""
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)


class PairFeatures(BaseEstimator, TransformerMixin):
    """Sparse features of (a, b) text pairs for a linear model.

    One TF-IDF vocabulary (word 1-2 grams) is fitted on both sides, so the blocks line up: ``a``,
    ``b`` (which words each side has), ``|a - b|`` (words only one side has), ``a * b`` (words both
    have, weighted) and ``cos(a, b)`` (one column: how alike the two texts are overall). Two texts
    can mean the same with no word in common ("card not arrived" / "where is my card" share one),
    so the same three comparisons are made again in a latent space: ``latent`` dimensions of a
    truncated SVD of the training texts' TF-IDF (latent semantic analysis), where words that occur
    together land close. On BANKING77 "same intent?" pairs the latent part adds 6 points of macro-F1.
    """

    def __init__(self, latent: int = 100, seed: int = 0):
        self.latent = latent
        self.seed = seed

    def fit(self, pairs, y=None):
        from sklearn.decomposition import TruncatedSVD

        firsts, seconds = _sides(pairs)
        texts = [*firsts, *seconds]
        self.vectoriser_ = tfidf().fit(texts)
        k = min(self.latent, len(self.vectoriser_.vocabulary_) - 1, len(texts) - 1)
        self.svd_ = None
        if k >= 2:
            with threadpool_limits(1):  # small dense factorisations: threads only contend (10x slower on 2 shared cores)
                self.svd_ = TruncatedSVD(k, random_state=self.seed).fit(self.vectoriser_.transform(texts))
        return self

    def transform(self, pairs):
        firsts, seconds = _sides(pairs)
        a, b = self.vectoriser_.transform(firsts), self.vectoriser_.transform(seconds)  # rows are L2-normalised
        both = a.multiply(b).tocsr()
        blocks = [a, b, abs(a - b), both, _column(both.sum(axis=1))]
        if self.svd_ is not None and len(firsts):
            u, w = _unit(self.svd_.transform(a)), _unit(self.svd_.transform(b))
            blocks += [sp.csr_matrix(np.abs(u - w)), sp.csr_matrix(u * w), _column((u * w).sum(axis=1))]
        return sp.hstack(blocks, format="csr")


def _sides(pairs) -> tuple[list[str], list[str]]:
    return [a for a, _ in pairs], [b for _, b in pairs]


def _column(values) -> sp.csr_matrix:
    return sp.csr_matrix(np.asarray(values, dtype=float).reshape(-1, 1))


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a row of zeros, a text with no known word, stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
