"""Fixtures for the monitor tests: banking-like and off-domain texts built in code, a hash-based
bag-of-words embedder standing in for MiniLM, a keyword classifier standing in for a model, and the
server fixtures of tests/serve (a real tiny classifier trained once per session)."""

from __future__ import annotations

import itertools
import json
import random
import types
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest

from tunekit.monitor.reference import words
from tunekit.serve.requestlog import RequestLog

LABELS = ["card", "refund", "transfer"]
PHRASES = {
    "card": ["my card was declined", "the card is blocked", "card payment failed at the shop", "I lost my card",
             "new card please", "my card has not arrived", "the card was charged twice"],
    "refund": ["I want a refund", "refund my order", "where is my refund", "the refund has not arrived",
               "please refund the money", "how long does a refund take", "refund the payment to my account"],
    "transfer": ["send a transfer abroad", "my transfer is pending", "transfer money to my friend", "the bank transfer failed",
                 "cancel the transfer", "how do I transfer money", "the transfer to my account is late"],
}
OPENERS = ["", "hi", "hello", "please help", "good morning", "excuse me"]
CLOSERS = ["", "thanks", "thank you", "today", "please", "asap"]

DISHES = ["the bread", "a tomato sauce", "the chicken thighs", "a lemon tart", "the risotto", "roasted vegetables", "a chocolate cake"]
STEPS = ["preheat the oven to 200 degrees and bake {d} for forty minutes until golden",
         "whisk the eggs with sugar and butter then fold in the flour slowly for {d}",
         "simmer {d} gently with garlic onions and fresh basil for twenty minutes",
         "season {d} with salt pepper and olive oil before roasting on a tray",
         "knead the dough for {d} ten minutes and let it rise overnight in the fridge",
         "chop the parsley finely and sprinkle it over {d} just before serving with rice"]


def banking(n: int, seed: int, exclude: set[str] = frozenset()) -> list[tuple[str, str]]:
    """``n`` distinct customer-support messages (text, intent), none of them in ``exclude``."""
    pool = [(" ".join(w for w in (o, p, c) if w), label)
            for label, phrases in PHRASES.items() for o, p, c in itertools.product(OPENERS, phrases, CLOSERS)]
    pool = [row for row in pool if row[0] not in exclude]
    return random.Random(seed).sample(pool, n)


def recipes(n: int, seed: int) -> list[str]:
    """``n`` cooking instructions: another domain, longer sentences, other words."""
    rng = random.Random(seed)
    return [rng.choice(STEPS).format(d=rng.choice(DISHES)) for _ in range(n)]


class HashEmbedder:
    """A tiny stand-in for MiniLM: signed hashed bag of words, L2-normalised (same text, same vector)."""

    name = "test:hash-bow"

    def __init__(self, dim: int = 64):
        self.dim = dim

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in words(text):
                h = zlib.crc32(w.encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class KeywordClassifier:
    """A stand-in for a ``TrainedModel``: the intent whose keyword a text has, confidently; else unsure."""

    labels = LABELS
    task = "classification"

    def predict_proba(self, texts: list[str], pairs=None, batch_size: int = 64) -> np.ndarray:
        return np.array([self.proba(t) for t in texts])

    @staticmethod
    def proba(text: str) -> list[float]:
        hits = [float(label in text) for label in LABELS]
        if sum(hits) == 0:
            return [0.4, 0.35, 0.25]
        p = np.array(hits) * 0.9 / sum(hits) + 0.1 / len(LABELS)
        return list(p / p.sum())


def prepared(train: list[tuple[str, str]], validation: list[tuple[str, str]]):
    """A stand-in for ``PreparedData``: train and validation as datasets, label ids into ``LABELS``."""
    from datasets import Dataset

    def ds(rows):
        return Dataset.from_dict({"id": [f"r{i}" for i in range(len(rows))], "text": [t for t, _ in rows],
                                  "label": [LABELS.index(label) for _, label in rows]})

    return types.SimpleNamespace(train=ds(train), validation=ds(validation), test=ds(validation), labels=LABELS, fingerprint="fp-test")


def write_manifest(path: Path, name: str, task: str = "classification") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tunekit.json").write_text(json.dumps({"name": name, "task": task, "labels": LABELS if task == "classification" else [],
                                                   "method": "lora", "base_model": {"id": "bundled:minilm"}, "max_length": 64}))
    return path


@pytest.fixture(scope="session")
def train_rows() -> list[tuple[str, str]]:
    return banking(300, seed=1)


@pytest.fixture(scope="session")
def validation_rows(train_rows) -> list[tuple[str, str]]:
    return banking(60, seed=2, exclude={t for t, _ in train_rows})


@pytest.fixture(scope="session")
def unseen_banking(train_rows, validation_rows) -> list[str]:
    """In-distribution production texts: the same kind of messages, none seen in training or validation."""
    return [t for t, _ in banking(150, seed=3, exclude={t for t, _ in train_rows + validation_rows})]


@pytest.fixture(scope="session")
def keyword_model_dir(tmp_path_factory, train_rows, validation_rows) -> Path:
    """A model directory named `intent` holding a reference built with the keyword classifier and the hash embedder."""
    from tunekit.monitor import reference

    path = write_manifest(tmp_path_factory.mktemp("keyword") / "model", "intent")
    cfg = types.SimpleNamespace(task="classification", name="intent")
    reference.build(cfg, prepared(train_rows, validation_rows), KeywordClassifier(), path, embedder=HashEmbedder())
    return path


def log_classify(workspace: Path, texts: list[str], *, model: str = "intent", version: str | None = "1",
                 batch: int = 1, at: float | None = None, feedback: dict[int, str] | None = None) -> list[str]:
    """Log classify requests of ``texts`` (``batch`` per request) answered by the keyword classifier,
    as the server would, and feedback labels on requests by index; returns the request ids."""
    ids = []
    with RequestLog(workspace / "serving.db") as log:
        for start in range(0, len(texts), batch):
            chunk = texts[start:start + batch]
            answer = []
            for text in chunk:
                p = KeywordClassifier.proba(text)
                answer.append({"label": LABELS[int(np.argmax(p))], "score": round(float(max(p)), 4)})
            rid = f"{model}-{version}-{uuid.uuid4().hex[:12]}"
            log.log({"id": rid, "route": "/v1/classify", "model": model, "version": version, "status": 200, "latency_ms": 3.0,
                     "request": {"inputs": chunk}, "response": answer, **({"created_at": at} if at is not None else {})})
            ids.append(rid)
        log.flush()
        for index, label in (feedback or {}).items():
            log.add_feedback(ids[index], rating=None, label=label, answer=None, comment=None, key_id=None)
    return ids
