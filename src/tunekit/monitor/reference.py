"""Reference statistics of the training data, stored with the model at training time.

``build`` writes ``reference.json`` (and ``reference_embeddings.npy``) into the adapter directory,
so the reference travels with the model into MLflow and onto the server, and ``tunekit monitor``
compares logged traffic with exactly the data this model learnt from:

- text length in words and characters (a sample of training texts);
- the vocabulary (the most frequent training words) and the out-of-vocabulary rate of held-out
  texts (validation: training texts are in their own vocabulary by construction, so their OOV rate
  would be too low a reference);
- the label distribution (classification) or target quantiles (regression) of the training rows;
- sentence embeddings of a sample of training texts (the bundled MiniLM by default);
- the model's predictions on validation: the predicted-label distribution and max-probability
  confidence (classification) or predicted values (regression).

Texts are PII-redacted the way the server redacts its log before anything is counted, so an
e-mail address is ``[EMAIL]`` on both sides of the comparison. Generation models are described by
the text of their conversations' user turns, which is what the server logs of a chat request.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunekit import task_kinds
from tunekit.errors import ModelError
from tunekit.monitor.embed import Embedder

FILENAME = "reference.json"
EMBEDDINGS = "reference_embeddings.npy"
FORMAT_VERSION = 1
_WORD = re.compile(r"\w+")
SCORE_DECIMALS = 4  # the server logs scores rounded so; rounded alike, near-certain scores (0.99996 -> 1.0) compare fairly

__all__ = ["EMBEDDINGS", "FILENAME", "build", "lengths", "load", "oov_counts", "oov_rate", "texts_of", "user_text", "words"]


def build(cfg, data, model, out_dir: Path, *, embed: bool = True, embedder: Embedder | None = None,
          max_values: int = 2000, vocab_size: int = 5000, embed_sample: int = 1000, seed: int = 0) -> Path:
    """Write ``reference.json`` (+ ``reference_embeddings.npy``) for ``data`` and ``model`` into ``out_dir``.

    ``data`` is the run's ``PreparedData`` (or, for ``task: generation``, its ``PreparedConversations``);
    ``model`` the ``TrainedModel`` as saved (None, or a generator, for generation: no predictions
    are stored). ``embed=False`` skips the embeddings; ``embedder`` replaces the bundled MiniLM.
    """
    rng = np.random.default_rng(seed)
    train_texts, val_texts = texts_of(cfg.task, data.train), texts_of(cfg.task, data.validation)
    vocab = Counter(w for t in train_texts for w in words(t))
    kept = dict(vocab.most_common(vocab_size))
    held_out = val_texts if len(val_texts) >= 20 else train_texts
    oov_texts = _sample(held_out, max_values, rng)
    ref: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "task": cfg.task, "name": cfg.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "data_fingerprint": getattr(data, "fingerprint", None),
        "rows": {"train": len(train_texts), "validation": len(val_texts)},
        "length": lengths(_sample(train_texts, max_values, rng)),
        "vocabulary": {"size": len(kept), "distinct_training_words": len(vocab), "words": kept,
                       "coverage": sum(kept.values()) / max(1, sum(vocab.values()))},
        "oov": {"source": "validation" if held_out is val_texts else "train (no validation rows)",
                **oov_counts(oov_texts, set(kept)), "rates": [r for r in (oov_rate(t, set(kept)) for t in oov_texts) if r is not None]},
        **_targets(cfg.task, data),
        "predictions": _predictions(cfg.task, data, model, max_values, rng),
        "embeddings": None,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if embed:
        ref["embeddings"] = _embed(train_texts, embedder, embed_sample, rng, out_dir)
    path = out_dir / FILENAME
    path.write_text(json.dumps(ref, ensure_ascii=False), encoding="utf-8")
    return path


def load(model_dir: Path) -> tuple[dict, np.ndarray | None]:
    """The reference stored in ``model_dir`` and its embeddings (None when it has none)."""
    path = Path(model_dir) / FILENAME
    if not path.is_file():
        raise ModelError(f"{model_dir}: no {FILENAME}, the training-time statistics monitoring compares traffic with. "
                         "Models trained before tunekit stored them have none: retrain with `tunekit run CONFIG`, "
                         "or write one with tunekit.monitor.reference.build(cfg, data, model, MODEL_DIR).")
    ref = json.loads(path.read_text(encoding="utf-8"))
    if ref.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: reference format {ref.get('format_version')!r}, this tunekit reads {FORMAT_VERSION}; rebuild it")
    emb = ref.get("embeddings")
    return ref, (np.load(Path(model_dir) / emb["file"]) if emb else None)


# -- text features: the same functions describe training texts here and production texts in the monitor --

def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def oov_rate(text: str, vocab: set[str]) -> float | None:
    """Share of ``text``'s words not in ``vocab``; None for a text without words."""
    ws = words(text)
    return sum(w not in vocab for w in ws) / len(ws) if ws else None


def oov_counts(texts: list[str], vocab: set[str]) -> dict[str, int]:
    """Out-of-vocabulary and total word counts over ``texts`` (the two-proportion test's inputs)."""
    ws = [w for t in texts for w in words(t)]
    return {"oov_words": sum(w not in vocab for w in ws), "words": len(ws)}


def texts_of(task: str, rows) -> list[str]:
    """The redacted texts of a split: ``text`` of each row, or the user turns of each conversation."""
    from tunekit.serve.requestlog import redact

    if task_kinds.kind(task).causal:
        return [redact(user_text(row["messages"])) for row in rows]
    return [redact(t) for t in rows["text"]]


def user_text(messages: list[dict]) -> str:
    """The user turns of a conversation as one text (content given as a string or as text parts)."""
    parts = []
    for m in messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return "\n".join(parts)


def lengths(texts: list[str]) -> dict[str, list[int]]:
    return {"words": [len(words(t)) for t in texts], "chars": [len(t) for t in texts]}


def _targets(task: str, data) -> dict:
    if task_kinds.kind(task).labelled:
        counts = Counter(data.labels[i] for i in data.train["label"])
        return {"labels": {name: counts.get(name, 0) for name in data.labels}}
    if task_kinds.kind(task).numeric:
        y = np.asarray(data.train["label"], dtype=float)
        qs = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
        return {"target": {"mean": float(y.mean()), "std": float(y.std()),
                           "quantiles": {f"p{int(q * 100)}": float(v) for q, v in zip(qs, np.quantile(y, qs))}}}
    return {}


def _predictions(task: str, data, model, max_values: int, rng: np.random.Generator) -> dict | None:
    """The model on (a sample of) validation: what production predictions are compared with."""
    if task_kinds.kind(task).causal or model is None or len(data.validation) == 0:
        return None
    from tunekit.data.prepare import text_pairs

    idx = np.sort(rng.permutation(len(data.validation))[:max_values])
    rows = data.validation.select(idx)
    texts, pairs = list(rows["text"]), text_pairs(rows)
    if task_kinds.kind(task).numeric:
        return {"source": "validation", "values": [float(v) for v in model.predict(texts, pairs)]}
    from tunekit.data.multitask import restrict_split

    probs = restrict_split(model.predict_proba(texts, pairs), data, rows)  # multi-task: each row within its own task
    labels = model.labels
    predicted = Counter(labels[i] for i in probs.argmax(1))
    return {"source": "validation", "labels": {name: predicted.get(name, 0) for name in labels},
            "confidence": [round(float(p), SCORE_DECIMALS) for p in probs.max(1)]}


def _embed(texts: list[str], embedder: Embedder | None, n: int, rng: np.random.Generator, out_dir: Path) -> dict:
    if embedder is None:
        from tunekit.monitor.embed import MiniLMEmbedder

        embedder = MiniLMEmbedder()
    vectors = np.asarray(embedder(_sample(texts, n, rng)), dtype=np.float32)
    np.save(out_dir / EMBEDDINGS, vectors)
    return {"embedder": embedder.name, "file": EMBEDDINGS, "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1])}


def _sample(items: list, n: int, rng: np.random.Generator) -> list:
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.sort(rng.choice(len(items), n, replace=False))]
