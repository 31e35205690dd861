"""Scoring generated text against references, and the paired comparison of two generators.

Four metrics, all in [0, 1] and higher is better:

- ``exact_match``: 1 when the answer equals the reference after ``normalise_answer`` (strip,
  collapse whitespace; case and punctuation still count).
- ``rouge_l``: ROUGE-L F1 of rouge-score (longest common subsequence of words; stemming off,
  rouge-score's default tokenizer, which lowercases and keeps only ASCII letters and digits, so
  text in other scripts scores 0 here: read chrF for it).
- ``bleu``: sacrebleu BLEU / 100. Per example it is sentence BLEU with effective order; for the
  test set it is *corpus* BLEU (n-gram counts summed over all rows, then one score), which is not
  the mean of the sentence scores.
- ``chrf``: sacrebleu chrF (character n-grams) / 100; per example sentence chrF, for the set
  corpus chrF.

With ``eval.extract`` every metric scores the answer found in the text (``extract_answer``) in
predictions and references alike; a prediction with no answer in it scores as an empty one.

An empty prediction scores 0 on every metric (unless its reference is empty too, which is an exact
match). Both models in ``compare`` answer the same rows, so the bootstrap (``stats.bootstrap``) is
paired, as in ``stats.paired_bootstrap``: one draw of row indices per resample scores both models, and corpus
BLEU and chrF are recomputed on each resampled corpus from per-row sufficient statistics
(sacrebleu's own n-gram counts), so they cost a sum per resample rather than a re-tokenisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from tunekit.data.answers import extract_answer
from tunekit.evaluate.stats import bootstrap, bootstrap_p

GENERATION_METRICS = ("exact_match", "rouge_l", "bleu", "chrf")


def extract_all(texts: list[str], rule: str | None) -> list[str]:
    """``extract_answer`` of each text, an empty answer where there is none (it then scores 0)."""
    if rule is None:
        return list(texts)
    return [extract_answer(t, rule) or "" for t in texts]


def normalise_answer(text: str) -> str:
    """The form exact match compares: leading and trailing whitespace removed, every run of
    whitespace (spaces, tabs, newlines) made one space. Case and punctuation are kept."""
    return " ".join(text.split())


def per_example(preds: list[str], refs: list[str], extract: str | None = None) -> dict[str, np.ndarray]:
    """Each metric per row (``GENERATION_METRICS`` order), as float arrays of ``len(preds)``;
    with ``extract`` (``eval.extract``) on the answers found in predictions and references."""
    _check_rows(preds=preds, refs=refs)
    preds, refs = extract_all(preds, extract), extract_all(refs, extract)
    sentence_bleu, chrf = BLEU(effective_order=True), CHRF()
    return {
        "exact_match": _exact_match(preds, refs),
        "rouge_l": _rouge_l(preds, refs),
        "bleu": np.array([sentence_bleu.sentence_score(p, [r]).score / 100 for p, r in zip(preds, refs)]).clip(0, 1),
        "chrf": np.array([chrf.sentence_score(p, [r]).score / 100 for p, r in zip(preds, refs)]).clip(0, 1),
    }


def generation_metrics(preds: list[str], refs: list[str], extract: str | None = None) -> dict[str, float]:
    """Test-set scores: mean exact match and ROUGE-L over rows; corpus BLEU and corpus chrF;
    with ``extract`` (``eval.extract``) on the answers found in predictions and references."""
    _check_rows(preds=preds, refs=refs)
    preds, refs = extract_all(preds, extract), extract_all(refs, extract)
    return _Scores.of(preds, refs).summary(np.ones(len(preds), dtype=np.int64))


def compare(preds_base: list[str], preds_model: list[str], refs: list[str], resamples: int = 1000,
            seed: int = 0, confidence: float = 0.95, extract: str | None = None) -> dict[str, dict]:
    """Paired bootstrap of model minus baseline for every metric (``diff`` > 0: the model is better).

    Returns ``{metric: {"baseline", "model", "diff", "low", "high", "p_value"}}``. The resampled
    rows are drawn by ``stats.bootstrap``, as for ``stats.paired_bootstrap`` (same seed, same rows), and
    the p-value is ``stats.bootstrap_p``: the share of resampled gaps on the far side of 0, doubled, capped at 1.
    """
    _check_rows(preds_base=preds_base, preds_model=preds_model, refs=refs)
    preds_base, preds_model, refs = (extract_all(texts, extract) for texts in (preds_base, preds_model, refs))
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    n = len(refs)
    base, model = _Scores.of(preds_base, refs), _Scores.of(preds_model, refs)
    observed_b, observed_m = base.summary(np.ones(n, dtype=np.int64)), model.summary(np.ones(n, dtype=np.int64))

    def gaps(rows: np.ndarray) -> list[float]:
        counts = np.bincount(rows, minlength=n)  # how often each row was drawn: sums over a resample are counts @ x
        b, m = base.summary(counts), model.summary(counts)
        return [m[name] - b[name] for name in GENERATION_METRICS]

    diffs, low, high = bootstrap(gaps, n, resamples, seed, confidence)
    out = {}
    for k, name in enumerate(GENERATION_METRICS):
        gap = observed_m[name] - observed_b[name]
        out[name] = {"baseline": observed_b[name], "model": observed_m[name], "diff": gap,
                     "low": float(low[k]), "high": float(high[k]), "p_value": bootstrap_p(gap, diffs[:, k])}
    return out


def side_by_side(prompts: list[str], refs: list[str], base_preds: list[str], model_preds: list[str],
                 n: int, seed: int) -> list[dict]:
    """A seeded random sample of ``n`` rows (all of them if fewer), in test-set order, with both
    answers and their ROUGE-L, for a person to read beside the numbers."""
    _check_rows(prompts=prompts, refs=refs, base_preds=base_preds, model_preds=model_preds)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    picked = np.sort(np.random.default_rng(seed).choice(len(refs), size=min(n, len(refs)), replace=False)).tolist()
    picked_refs = [refs[i] for i in picked]
    rouge_b = _rouge_l([base_preds[i] for i in picked], picked_refs)
    rouge_m = _rouge_l([model_preds[i] for i in picked], picked_refs)
    return [{"prompt": prompts[i], "reference": refs[i], "baseline": base_preds[i], "fine_tuned": model_preds[i],
             "rouge_l_baseline": float(rb), "rouge_l_fine_tuned": float(rm)}
            for i, rb, rm in zip(picked, rouge_b, rouge_m)]


@dataclass
class _Scores:
    """What every metric of one model needs, per row: exact match and ROUGE-L as 0-1 scores,
    BLEU and chrF as sacrebleu's sufficient statistics (one row of n-gram counts per example)."""

    exact_match: np.ndarray
    rouge_l: np.ndarray
    bleu_stats: np.ndarray
    chrf_stats: np.ndarray

    @classmethod
    def of(cls, preds: list[str], refs: list[str]) -> _Scores:
        # sacrebleu's per-segment statistics are what its corpus_score sums; private, but stable
        # across 2.x and the only way to re-score a resampled corpus without re-tokenising it
        return cls(_exact_match(preds, refs), _rouge_l(preds, refs),
                   np.asarray(_bleu()._extract_corpus_statistics(preds, [refs]), dtype=np.int64),
                   np.asarray(_chrf()._extract_corpus_statistics(preds, [refs]), dtype=np.int64))

    def summary(self, counts: np.ndarray) -> dict[str, float]:
        """Every metric on the corpus holding row i ``counts[i]`` times."""
        total = counts.sum()
        return {
            "exact_match": float(counts @ self.exact_match / total),
            "rouge_l": float(counts @ self.rouge_l / total),
            "bleu": _unit(_bleu()._compute_score_from_stats((counts @ self.bleu_stats).tolist()).score),
            "chrf": _unit(_chrf()._compute_score_from_stats((counts @ self.chrf_stats).tolist()).score),
        }


def _exact_match(preds: list[str], refs: list[str]) -> np.ndarray:
    return np.array([normalise_answer(p) == normalise_answer(r) for p, r in zip(preds, refs)], dtype=float)


def _rouge_l(preds: list[str], refs: list[str]) -> np.ndarray:
    scorer = _rouge_scorer()
    return np.array([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)], dtype=float)


@lru_cache(maxsize=1)
def _rouge_scorer():
    # rouge-score imports nltk (over a second): only when text is scored, not whenever reports render
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


@lru_cache(maxsize=1)
def _bleu() -> BLEU:
    return BLEU()


@lru_cache(maxsize=1)
def _chrf() -> CHRF:
    return CHRF()


def _unit(score: float) -> float:
    """sacrebleu's 0-100 score as 0-1 (identical text comes out as 100.00000000000004)."""
    return float(min(max(score / 100, 0.0), 1.0))


def _check_rows(**columns: list[str]) -> None:
    """Every column must have one entry per test row, and there must be rows."""
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("need one entry per test row in each of " + ", ".join(lengths)
                         + "; got lengths " + ", ".join(f"{name}={k}" for name, k in lengths.items()))
    if not next(iter(lengths.values())):
        raise ValueError("no rows to score: " + ", ".join(lengths) + " are empty")
