"""How an encoder classifier turns its token states into the one vector its head reads.

A Hugging Face sequence classifier reads the first token's state (BERT: through its pooler). A
sentence-transformers checkpoint such as all-MiniLM-L6-v2 was trained to mean its token states
instead, so its first-token state (and BERT's pooler, which that training never touched) carries far
less: on BANKING77 a logistic regression on frozen MiniLM features reaches 84.0% test accuracy from
the pooler and 93.0% from the mean. ``mean`` pooling gives the head the mean over the real (unpadded)
tokens, the vector the checkpoint was trained to produce.

It is done with two hooks rather than a model class of its own, so the weights, ``save_pretrained``,
PEFT adapters, the merged export and the ONNX graph stay those of the stock architecture: a
pre-hook on the encoder model keeps the batch's attention mask, a hook on its stack of layers puts
the masked mean where the head looks (the first position), and BERT's pooler, a dense layer and
tanh that sentence-transformers training never used, passes it through unchanged (with the pooler
on the mean, BANKING77 validation macro-F1 after one epoch of the freeze method was 0.747). ``Manifest.pooling`` records the
choice, and every loader applies it (``load_base``, ``load_trained``), so a model is always served
as it was trained.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from tunekit.errors import ConfigError

__all__ = ["POOLINGS", "apply", "checkpoint_pooling", "resolve"]

POOLINGS = ("head", "mean")


def checkpoint_pooling(source: str) -> str:
    """The pooling a local checkpoint was trained with: ``mean`` for a sentence-transformers folder whose
    pooling module means the token states, else ``head`` (the architecture's own)."""
    config = Path(source) / "1_Pooling" / "config.json"
    if not config.is_file():
        return "head"
    try:
        modes = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return "head"
    return "mean" if modes.get("pooling_mode_mean_tokens") and not modes.get("pooling_mode_cls_token") else "head"


def resolve(setting: str, source: str, model=None) -> str:
    """``model.pooling`` made concrete: ``auto`` follows the checkpoint (``checkpoint_pooling``), and
    keeps the architecture's head where ``model`` has no encoder stack this module can pool."""
    if setting != "auto":
        return setting
    found = checkpoint_pooling(source)
    return "head" if found == "mean" and model is not None and _encoder(model)[1] is None else found


def _encoder(model):
    """(the encoder model, its stack of layers) under a sequence classifier (PEFT-wrapped or not);
    the stack is None when there is none to hook (BERT-like: ``encoder``; DistilBERT: ``transformer``)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    encoder_model = inner.base_model  # e.g. BertModel under BertForSequenceClassification
    if encoder_model is inner:
        return encoder_model, None
    return encoder_model, getattr(encoder_model, "encoder", None) or getattr(encoder_model, "transformer", None)


def apply(model, pooling: str):
    """Make ``model`` (a ``...ForSequenceClassification``, before or after PEFT wraps it) pool as
    ``pooling`` says; ``head`` leaves it as it is. Returns the model."""
    if pooling == "head":
        return model
    if pooling != "mean":
        raise ConfigError(f"model.pooling {pooling!r}: use one of {', '.join(POOLINGS)} (or auto)")
    encoder_model, layers = _encoder(model)
    if layers is None:
        raise ConfigError(f"model.pooling mean: {type(model).__name__} has no encoder stack to pool over; set model.pooling: head")
    if getattr(layers, "_tunekit_mean_pooling", False):
        return model
    current = threading.local()  # per thread: the server may run several batches through one model at once

    def keep_mask(module, args, kwargs):
        current.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def mean_first(module, args, output):
        states = output[0] if isinstance(output, tuple) else output.last_hidden_state
        mask = getattr(current, "mask", None)
        weights = (torch.ones(states.shape[:2], dtype=states.dtype, device=states.device) if mask is None else mask.to(states.dtype)).unsqueeze(-1)
        mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        pooled = torch.cat([mean.unsqueeze(1), states[:, 1:]], dim=1)
        if isinstance(output, tuple):
            return (pooled, *output[1:])
        output.last_hidden_state = pooled
        return output

    encoder_model.register_forward_pre_hook(keep_mask, with_kwargs=True)
    layers.register_forward_hook(mean_first)
    pooler = getattr(encoder_model, "pooler", None)
    if isinstance(pooler, torch.nn.Module):  # BERT's pooler (dense + tanh) was never trained on the mean: the head reads the mean itself
        pooler.register_forward_hook(lambda module, args, output: args[0][:, 0])
    layers._tunekit_mean_pooling = True
    return model
