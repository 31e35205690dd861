"""Prompt-based methods through PEFT: prompt tuning, prefix tuning and p-tuning.

The base model is untouched; only virtual tokens (or prefixes, or the encoder that makes them)
and the classification head train. Each adds ``num_virtual_tokens`` positions to every input, so
the base model's position limit must leave room for them: checked here with a clear message.

Prefix tuning feeds its prefixes in as ``past_key_values``. PEFT's classification wrapper only does
so when the encoder's ``forward`` takes that argument by name; transformers 5.24 renamed it to
``cache`` in BERT-style encoders, so there prefix tuning cannot run. ``check_prefix`` says so when the
method is applied, naming the methods that work, instead of PEFT's error in the first training step.
"""

from __future__ import annotations

import inspect

from tunekit.errors import ConfigError

# The methods that need nothing from the encoder's forward signature (every one but prefix tuning).
WORK_ON_ANY_ENCODER = ("lora", "dora", "rslora", "ia3", "prompt_tuning", "p_tuning", "freeze", "full")


def apply(model, method, task_type: str = "SEQ_CLS"):
    from peft import (
        PrefixTuningConfig,
        PromptEncoderConfig,
        PromptTuningConfig,
        TaskType,
        get_peft_model,
    )

    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and method.num_virtual_tokens >= limit:
        raise ConfigError(f"method.num_virtual_tokens {method.num_virtual_tokens} leaves no room for text: the base model takes {limit} positions")
    if method.kind == "prefix_tuning" and task_type == "SEQ_CLS":
        check_prefix(model)
    common = {"task_type": TaskType[task_type], "num_virtual_tokens": method.num_virtual_tokens}
    if method.kind == "prompt_tuning":
        config = PromptTuningConfig(**common)
    elif method.kind == "prefix_tuning":
        config = PrefixTuningConfig(**common)
    else:
        config = PromptEncoderConfig(**common, encoder_hidden_size=method.encoder_hidden_size)
    return get_peft_model(model, config)


def takes_past_key_values(model) -> bool:
    """Whether PEFT's classification wrapper can hand prefixes to ``model``: its forward, or that of
    its transformer backbone (the child PEFT calls when the head's forward lacks the argument), takes
    ``past_key_values`` by name. This mirrors the test PEFT makes in its forward pass."""
    from transformers import PreTrainedModel

    def takes(module) -> bool:
        return "past_key_values" in inspect.signature(module.forward).parameters

    backbones = [m for _, m in model.named_children() if isinstance(m, PreTrainedModel)]
    return takes(model) or any(takes(m) for m in backbones)


def check_prefix(model) -> None:
    if not takes_past_key_values(model):
        kind = getattr(model.config, "model_type", type(model).__name__)
        raise ConfigError(
            f"method.kind prefix_tuning cannot run on this {kind} encoder: prefix tuning hands its prefixes to the model as "
            "past_key_values, which this model's forward no longer accepts (transformers 5.24 and later). "
            f"Use one of: {', '.join(WORK_ON_ANY_ENCODER)} (prompt_tuning and p_tuning are the closest: virtual tokens, base untouched)")
