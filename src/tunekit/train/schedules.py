"""Two schedules usable with any method: discriminative learning rates and gradual unfreezing.

Both follow ULMFiT (Howard & Ruder 2018): lower layers hold general features and should move
less (discriminative rates, ``train.layer_lr_decay``), and unfreezing from the top down, one block
per epoch, keeps the random head's large early gradients from wrecking the pretrained layers
(``train.gradual_unfreezing``). Depth is read from parameter names: embeddings are depth 0, block
``i`` is depth ``i + 1``, anything above the blocks (pooler, head) is the top.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def depth(name: str, n_blocks: int) -> int:
    """0 for embeddings, i + 1 for transformer block i, n_blocks + 1 for what sits on top."""
    match = _BLOCK.search(name)
    if match:
        return int(match[1]) + 1
    return 0 if "embed" in name else n_blocks + 1


def n_blocks(model) -> int:
    found = [int(m[1]) for name, _ in model.named_parameters() if (m := _BLOCK.search(name))]
    return max(found) + 1 if found else 0


def layer_scale(name: str, blocks: int, decay: float | None) -> float:
    """Learning-rate multiplier: ``decay ** (levels below the top)``; 1 without decay."""
    if not decay:
        return 1.0
    return decay ** (blocks + 1 - depth(name, blocks))


def unfreeze_for_epoch(model, trainable: set[str], epoch: int, blocks: int) -> int:
    """Let only the top ``epoch`` levels of the method's trainable parameters train (the head and
    pooler are level 1, the top block level 2, ...); returns how many parameters train now."""
    lowest = blocks + 2 - epoch  # epoch 1: only depth blocks + 1 (the head) trains
    count = 0
    for name, param in model.named_parameters():
        on = name in trainable and depth(name, blocks) >= lowest
        param.requires_grad_(on)
        count += param.numel() if on else 0
    return count
