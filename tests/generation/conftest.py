"""Fixtures for generation: a tiny random Llama and a synthetic reverse-a-list task, built in code."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = "apple pear plum fig kiwi lime mango peach".split()


def reverse_rows(n: int, seed: int = 0, lengths: tuple[int, int] = (3, 3)) -> list[dict]:
    """``n`` distinct chat examples: "reverse: a b c" answered "c b a".

    Three words by default: a 2-block model learns fixed-length reversal (attend to a fixed
    relative position) in seconds, while variable lengths need induction heads and far longer.
    """
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n:
        words = tuple(rng.choice(WORDS) for _ in range(rng.randint(*lengths)))
        if words in seen:
            continue
        seen.add(words)
        rows.append({"messages": [{"role": "user", "content": "reverse: " + " ".join(words)},
                                  {"role": "assistant", "content": " ".join(reversed(words))}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tunekit.models.tiny import build_tiny_llama

    texts = [r["messages"][0]["content"] for r in reverse_rows(200)]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts, hidden_size=128, layers=2)
