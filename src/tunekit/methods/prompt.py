"""Prompt-based methods through PEFT: prompt tuning, prefix tuning and p-tuning.

The base model is untouched; only virtual tokens (or prefixes, or the encoder that makes them)
and the classification head train. Each adds ``num_virtual_tokens`` positions to every input, so
the base model's position limit must leave room for them: checked here with a clear message.
"""

from __future__ import annotations

from tunekit.errors import ConfigError


def apply(model, method, task_type: str = "SEQ_CLS"):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and method.num_virtual_tokens >= limit:
        raise ConfigError(f"method.num_virtual_tokens {method.num_virtual_tokens} leaves no room for text: the base model takes {limit} positions")
    common = {"task_type": TaskType[task_type], "num_virtual_tokens": method.num_virtual_tokens}
    if method.kind == "prompt_tuning":
        config = PromptTuningConfig(**common)
    elif method.kind == "prefix_tuning":
        config = PrefixTuningConfig(**common)
    else:
        config = PromptEncoderConfig(**common, encoder_hidden_size=method.encoder_hidden_size)
    return get_peft_model(model, config)
