"""The optimizer, its schedule and the compute precision, the same for every task.

AdamW with parameter groups: the freshly initialised head (``model.head_learning_rate``) apart from
the pretrained weights (``train.learning_rate``, scaled per layer by ``train.layer_lr_decay``), and
no weight decay on biases and LayerNorm weights (one-dimensional tensors). A linear warm-up over
``train.warmup_ratio`` of the steps, then linear decay to zero.
"""

from __future__ import annotations

import contextlib

import torch

from tunekit.config import TunekitConfig
from tunekit.train import schedules

__all__ = ["HEAD_NAMES", "autocast", "build", "is_head"]

HEAD_NAMES = {"classifier", "score"}  # the freshly initialised output layer of sequence classifiers


def is_head(name: str) -> bool:
    """Whether a parameter belongs to the new output layer (by its module names)."""
    return any(part in HEAD_NAMES for part in name.split("."))


def build(model, cfg: TunekitConfig, total_steps: int):
    """``(optimizer, scheduler)`` for the parameters of ``model`` that require grad."""
    from transformers import get_linear_schedule_with_warmup

    blocks = schedules.n_blocks(model)
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            lr = cfg.head_learning_rate if is_head(name) else cfg.learning_rate * schedules.layer_scale(name, blocks, cfg.train.layer_lr_decay)
            groups.setdefault((lr, param.ndim >= 2), []).append(param)  # no decay on biases and LayerNorm
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": lr, "weight_decay": cfg.train.weight_decay if decays else 0.0}
         for (lr, decays), params in groups.items()],
        lr=cfg.learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def autocast(cfg: TunekitConfig, device: torch.device):
    """bf16 autocast where asked for (``train.precision: bf16``, or ``auto`` on a GPU that has bf16), else nothing.
    The weights stay in float32; the loss is computed in float32 (``.float()`` before the cross-entropy)."""
    want = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not want:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
