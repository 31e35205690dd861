"""Tokenising and batching: dynamic padding and length-grouped batches.

Padding every batch to ``max_length`` wastes most of the compute on short texts (BANKING77's
median is 11 tokens). tunekit pads each batch only to its longest row, and with
``train.group_by_length`` it builds batches of rows of similar length, then shuffles the batches,
so training sees a new random order of batches each epoch but almost no padding.
"""

from __future__ import annotations

import numpy as np


def batch_order(lengths: list[int], batch_size: int, rng: np.random.Generator, group_by_length: bool) -> list[np.ndarray]:
    """Index batches for one epoch.

    Grouped: shuffle, cut into chunks of 50 batches, sort each chunk by length, cut into batches,
    shuffle the batches. The chunking keeps randomness across epochs; the sort inside a chunk keeps
    padding low. Not grouped: a plain shuffle.
    """
    perm = rng.permutation(len(lengths))
    if not group_by_length:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    lengths_arr = np.asarray(lengths)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(perm), chunk):
        part = perm[start : start + chunk]
        part = part[np.argsort(lengths_arr[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches
