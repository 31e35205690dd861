"""Freeze: train only the top transformer blocks and the head (and BERT's pooler, which feeds it).

The lower layers of a pretrained encoder hold general features that small task data rarely
improves; training only the top keeps most of full fine-tuning's accuracy at a fraction of the
optimizer memory, and the saved model is an ordinary full checkpoint.
"""

from __future__ import annotations

import torch

from tunekit.errors import ConfigError

HEAD_AND_POOLER = ("classifier", "score", "pooler")


def blocks(model) -> torch.nn.ModuleList:
    """The stack of transformer blocks: the longest ModuleList in the model."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ConfigError(f"method.kind freeze: found no stack of transformer blocks in {type(model).__name__}; use lora or full")
    return max(lists, key=len)


def apply(model, method, task_type: str = "SEQ_CLS"):
    for param in model.parameters():
        param.requires_grad_(False)
    stack = blocks(model)
    if method.layers > len(stack):
        raise ConfigError(f"method.layers is {method.layers} but the base model has {len(stack)} transformer blocks")
    for block in list(stack)[len(stack) - method.layers :]:
        for param in block.parameters():
            param.requires_grad_(True)
    for name, module in model.named_modules():
        if name.split(".")[-1] in HEAD_AND_POOLER:
            for param in module.parameters():
                param.requires_grad_(True)
    return model
