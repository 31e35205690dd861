"""What a generation task is scored on: which test rows (``scored_rows``) and the answer inside a
text (``extract_answer``, by ``eval.extract``).

The prompted baselines and the fine-tuned model answer the same ``scored_rows``; data preparation
refuses references that hold no answer, and evaluation scores the answers found in predictions and
references alike (``evaluate.textgen``).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["extract_answer", "scored_rows"]

_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*)?\.?\d+")


def extract_answer(text: str, rule: str | None) -> str | None:
    """The answer inside ``text`` by ``eval.extract``: the whole text when ``rule`` is None;
    ``last_number``: the last number, commas removed and trailing zeros after the point dropped
    (``1,234.50`` -> ``1234.5``, ``42.0`` -> ``42``); else the first group (or the whole match) of
    the first match of the regular expression ``rule``. None when there is no answer in the text."""
    if rule is None:
        return text
    if rule == "last_number":
        numbers = _NUMBER.findall(text)
        if not numbers:
            return None
        number = numbers[-1].replace(",", "").lstrip("+")
        if "." in number:
            number = number.rstrip("0").rstrip(".") or "0"
        return number
    match = re.search(rule, text, re.DOTALL)
    if match is None:
        return None
    return (match.group(1) if match.re.groups else match.group(0)).strip()


def scored_rows(cfg, data) -> list[int]:
    """Indices of the test rows decoded for scoring: all, or a seeded sample of ``eval.max_test_rows``."""
    n = len(data.test)
    if cfg.eval.max_test_rows is None or cfg.eval.max_test_rows >= n:
        return list(range(n))
    return sorted(np.random.default_rng(cfg.data.split.seed).choice(n, cfg.eval.max_test_rows, replace=False).tolist())
