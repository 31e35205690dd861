"""How a causal LM is scored on token rows: packing, collation, the summed token loss, the mean loss.

Training (``train.causal``) and evaluation (validation loss, perplexity in ``evaluate.generation``)
score the same rows the same way, so the code lives here, below both.

Packing: several examples share a row of at most ``model.max_length`` tokens, first-fit decreasing.
Position ids restart at 0 for every example and no attention mask is passed, which is how
transformers recognises packed sequences and builds a block-diagonal causal mask: examples share a
row but never attend to each other (``packing_isolates`` checks this on the model itself, and
``tests/generation/test_sft.py`` checks the packed loss equals the unpacked one). No compute goes to
padding beyond the tail of each row.

An example is anything with ``ids`` (token ids) and ``mask`` (1 where the token is trained:
assistant turns and their EOS), such as ``data.conversations.Encoded``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["collate", "mean_loss", "pack", "packing_isolates", "token_loss"]


@dataclass
class _Example:
    ids: list[int]
    mask: list[int]


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: group example indices into rows of at most ``capacity`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate(examples: list, capacity: int, pad_id: int, packing: bool) -> dict:
    """Tensors for one micro-batch: ``input_ids``, ``labels`` (-100 where untrained or padding), and
    ``position_ids`` restarting per example (packed) or an ``attention_mask`` (padded); and
    ``real_tokens``, the number of non-padding tokens."""
    rows = pack([len(e.ids) for e in examples], capacity) if packing else [[i] for i in range(len(examples))]
    width = max(sum(len(examples[i].ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e = examples[i]
            n = len(e.ids)
            ids[r, at : at + n] = torch.tensor(e.ids)
            labels[r, at : at + n] = torch.tensor([t if m else -100 for t, m in zip(e.ids, e.mask)])
            positions[r, at : at + n] = torch.arange(n)
            attention[r, at : at + n] = 1
            at += n
        positions[r, at:] = torch.arange(width - at)  # padding is one more (never trained) sequence
    batch = {"input_ids": ids, "labels": labels, "real_tokens": int(attention.sum())}
    if packing:
        batch["position_ids"] = positions
    else:
        batch["attention_mask"] = attention
    return batch


def token_loss(model, batch: dict, device: torch.device) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled positions of ``batch``."""
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "position_ids", "attention_mask")}
    logits = model(**inputs, use_cache=False).logits  # with a cache, transformers does not look for packed sequences
    labels = batch["labels"].to(device)
    if logits.shape[1] != labels.shape[1]:  # prompt methods prepend virtual tokens to the logits
        logits = logits[:, -labels.shape[1] :]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                                             ignore_index=-100, reduction="sum")


@torch.no_grad()
def mean_loss(model, encoded: list, cfg, pad_id: int, device: torch.device, packing: bool = True) -> float:
    """Mean loss per trained token over ``encoded`` (perplexity is its exponential); batches of
    ``cfg.train.eval_batch_size`` examples, rows of at most ``cfg.model.max_length`` tokens."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    for start in range(0, len(order), cfg.train.eval_batch_size):
        chunk = [encoded[i] for i in order[start : start + cfg.train.eval_batch_size]]
        total += token_loss(model, collate(chunk, cfg.model.max_length, pad_id, packing), device).item()
        count += sum(sum(e.mask) for e in chunk)
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def packing_isolates(model, device: torch.device, console=None) -> bool:
    """Whether this model keeps packed examples apart: the loss of two short examples packed in
    one row must equal their losses computed apart. Models whose attention ignores restarting
    position ids would let examples attend to each other; they train on padded batches instead."""
    vocab = model.get_input_embeddings().num_embeddings
    a = _Example([t % vocab for t in (3, 17, 29, 41, 53)], [0, 0, 1, 1, 1])
    b = _Example([t % vocab for t in (7, 19, 31, 43)], [0, 1, 1, 1])
    was_training = model.training
    model.eval()
    together = token_loss(model, collate([a, b], 16, 0, packing=True), device).item()
    apart = sum(token_loss(model, collate([e], 16, 0, packing=True), device).item() for e in (a, b))
    model.train(was_training)
    ok = math.isclose(together, apart, rel_tol=1e-3, abs_tol=1e-3)
    if not ok and console is not None:
        console.print("  packing off: this model lets packed examples attend to each other; training on padded batches instead")
    return ok
