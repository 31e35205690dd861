"""Adaptation methods: one small module per family, all behind ``apply``.

``apply(model, method)`` returns the model ready to train: wrapped by PEFT for adapter methods,
partly frozen for ``freeze``, unchanged with every weight trainable for ``full``. ``check`` runs
before any weights load, so an impossible combination (QLoRA without CUDA) fails in a second,
not after a download. Adding a method means a module here, a config class in ``config.py`` and a
line in ``_APPLY``; the mapping is explicit, not filled by import side effects.
"""

from __future__ import annotations

from tunekit.methods import freeze, full, ia3, lora, prompt

_APPLY = {
    "lora": lora.apply, "dora": lora.apply, "rslora": lora.apply, "qlora": lora.apply,
    "ia3": ia3.apply,
    "prompt_tuning": prompt.apply, "prefix_tuning": prompt.apply, "p_tuning": prompt.apply,
    "freeze": freeze.apply,
    "full": full.apply,
}
PEFT_METHODS = frozenset(_APPLY) - {"freeze", "full"}  # saved as a PEFT adapter; the others as a full checkpoint

__all__ = ["PEFT_METHODS", "apply", "check", "count_parameters"]


def check(method, device) -> None:
    """Refuse a method this machine cannot run, before anything is loaded."""
    if method.kind == "qlora":
        lora.check_qlora(device)


def apply(model, method, task: str = "classification"):
    """Wrap ``model`` for ``method``; afterwards only the method's parameters require grad.

    ``task`` picks PEFT's task type: a sequence classifier keeps its new head trainable and saved
    (``SEQ_CLS``); a causal LM keeps its own output layer and PEFT shifts labels past virtual tokens
    (``CAUSAL_LM``).
    """
    from tunekit import task_kinds

    return _APPLY[method.kind](model, method, task_type="CAUSAL_LM" if task_kinds.kind(task).causal else "SEQ_CLS")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
