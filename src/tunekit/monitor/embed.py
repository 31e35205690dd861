"""Sentence embeddings for embedding drift: the bundled MiniLM, mean-pooled and normalised.

An embedder is any object with a ``name`` and ``__call__(texts) -> array (n, dim)``; the reference
records the name, and the monitor embeds production texts with an embedder of the same name (the
tests pass a tiny hash-based one, so they need no model weights).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tunekit.errors import ModelError

MINILM = "bundled:minilm"


class Embedder(Protocol):
    name: str

    def __call__(self, texts: list[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on CPU: mean of the last hidden states over real tokens, L2-normalised."""

    name = MINILM

    def __init__(self, batch_size: int = 64, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        from tunekit.models import resolve_base

        path = resolve_base(MINILM)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), dtype=np.float32)


def for_reference(name: str, given: Embedder | None) -> Embedder:
    """The embedder to use on production texts for a reference embedded with ``name``."""
    if given is not None:
        if given.name != name:
            raise ModelError(f"the reference embeddings were made with {name!r} but the monitor was given {given.name!r}; "
                             "embeddings from different embedders cannot be compared")
        return given
    if name == MINILM:
        return MiniLMEmbedder()
    raise ModelError(f"the reference embeddings were made with {name!r}, which tunekit cannot rebuild; pass the same embedder to monitor.run")
