"""Text lengths per split, in tokens when a tokenizer is given.

Inputs longer than ``model.max_length`` are truncated in training and serving; the report counts
them so that truncation is a number someone has seen, not a surprise. Without a tokenizer the
lengths are in characters and the report says token lengths were skipped.
"""

from __future__ import annotations

import numpy as np

BATCH = 1000
SKIPPED_NOTE = "token lengths skipped: no tokenizer was given, so lengths are in characters"


def length_report(rows: dict[str, list[dict]], max_length: int, tokenizer=None) -> dict:
    """Length statistics per split; with a tokenizer also rows over ``max_length`` tokens."""
    if tokenizer is None:
        splits = {name: stats([_chars(row) for row in split]) for name, split in rows.items()}
        return {"unit": "characters", "max_length": max_length, "note": SKIPPED_NOTE, "splits": splits}
    splits = {}
    for name, split in rows.items():
        lengths = token_lengths(split, tokenizer)
        splits[name] = {**stats(lengths), "over_max_length": sum(n > max_length for n in lengths)}
    return {"unit": "tokens", "max_length": max_length, "note": None, "splits": splits}


def token_lengths(rows: list[dict], tokenizer) -> list[int]:
    """Token counts with special tokens and without truncation, in batches (fast tokenizers are batched in Rust)."""
    out: list[int] = []
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        texts = [row["text"] for row in batch]
        pairs = [row["text_pair"] for row in batch] if batch and "text_pair" in batch[0] else None
        encoded = tokenizer(texts, pairs, truncation=False, padding=False, verbose=False)
        out += [len(ids) for ids in encoded["input_ids"]]
    return out


def stats(lengths: list[int]) -> dict:
    """min, mean, median, 95th percentile and max; zeros for an empty split."""
    if not lengths:
        return {"min": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0}
    values = np.asarray(lengths)
    return {
        "min": int(values.min()),
        "mean": round(float(values.mean()), 1),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": int(values.max()),
    }


def _chars(row: dict) -> int:
    return len(row["text"]) + len(row.get("text_pair", ""))
