"""Adaptation methods: one small module per ``method.kind``, all behind ``apply``.

``apply(model, method)`` returns the model ready to train: wrapped by PEFT for adapter methods,
or unchanged with every weight trainable for full fine-tuning. Adding a method means adding a
module here and a config class in ``config.py``; the mapping below is explicit, not filled by
import side effects.
"""

from __future__ import annotations

from tunekit.config import FullMethod, LoraMethod
from tunekit.methods import full, lora

_APPLY = {"lora": lora.apply, "full": full.apply}

__all__ = ["apply", "count_parameters"]


def apply(model, method: LoraMethod | FullMethod):
    """Wrap ``model`` for ``method``; afterwards only the method's parameters require grad."""
    return _APPLY[method.kind](model, method)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
