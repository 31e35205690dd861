"""Adaptation methods: one small module per family, and ``SPECS``, the one table of what each method is.

``apply(model, method)`` returns the model ready to train: wrapped by PEFT for adapter methods,
partly frozen for ``freeze``, unchanged with every weight trainable for ``full``. ``check`` runs
before any weights load, so an impossible combination (QLoRA without CUDA) fails in a second,
not after a download.

Every place that needs to know something about a method (is it saved as a PEFT adapter, can it be
merged, does it prepend virtual tokens, does it quantise the base) reads its row in ``SPECS``
rather than keeping its own set of names. Adding a method: its config class in ``config.py`` (in
``MethodConfig`` and ``METHODS``) with its default learning rates (``DEFAULT_LEARNING_RATE``,
``GENERATION_LEARNING_RATE``), its ``apply`` in a module here, and one row in ``SPECS``; the
mapping is explicit, not filled by import side effects.

Why the config classes and learning rates stay in ``config.py``: the config is validated, hashed
and given its learning rate (``TunekitConfig.learning_rate``) before any method code loads, and
``config`` is the leaf every stage imports; the rows here point at config's classes, so config
importing this table back would be a cycle (and would import torch with every config).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tunekit.config import DEFAULT_LEARNING_RATE, GENERATION_LEARNING_RATE, METHODS
from tunekit.methods import freeze, full, ia3, lora, prompt

__all__ = ["MERGEABLE", "PEFT_METHODS", "PROMPT_BASED", "SPECS", "VIRTUAL_TOKENS", "MethodSpec", "apply", "check",
           "count_parameters"]


@dataclass(frozen=True)
class MethodSpec:
    """One adaptation method: what it is configured with, how it is applied and what follows from it."""

    kind: str                        # the value of `method.kind` in a config and of `method` in tunekit.json
    config: type                     # its pydantic section in config.py (LoraMethod, ...): `config()` is the method with defaults
    apply: Callable                  # apply(model, method, task_type="SEQ_CLS" | "CAUSAL_LM") -> the model ready to train
    learning_rate: float             # default peak learning rate for classification and regression (config.DEFAULT_LEARNING_RATE)
    generation_learning_rate: float  # default peak learning rate for task generation (config.GENERATION_LEARNING_RATE)
    peft: bool                       # saved as a PEFT adapter (adapter_config.json on top of the base); else a full checkpoint
    mergeable: bool = False          # the adapter folds into the base weights (`tunekit export --merge`; the server merges at load)
    prompt_based: bool = False       # PEFT prompt learning: trained virtual tokens or prefixes outside the weights; no packing, no merge
    virtual_tokens: bool = False     # prepends `num_virtual_tokens` positions to every input (prefix tuning's prefixes are keys/values instead)
    quantized_base: bool = False     # trains on a 4-bit NF4 base (bitsandbytes, CUDA only)
    check: Callable | None = None    # check(device): refuses a machine that cannot run the method, before any weights load


def _row(kind: str, apply: Callable, **facts) -> MethodSpec:
    return MethodSpec(kind=kind, config=METHODS[kind], apply=apply, learning_rate=DEFAULT_LEARNING_RATE[kind],
                      generation_learning_rate=GENERATION_LEARNING_RATE[kind], **facts)


SPECS: dict[str, MethodSpec] = {spec.kind: spec for spec in (
    _row("lora", lora.apply, peft=True, mergeable=True),
    _row("dora", lora.apply, peft=True, mergeable=True),
    _row("rslora", lora.apply, peft=True, mergeable=True),
    _row("qlora", lora.apply, peft=True, quantized_base=True, check=lora.check_qlora),  # merging would dequantise the base
    _row("ia3", ia3.apply, peft=True, mergeable=True),
    _row("prompt_tuning", prompt.apply, peft=True, prompt_based=True, virtual_tokens=True),
    _row("prefix_tuning", prompt.apply, peft=True, prompt_based=True),
    _row("p_tuning", prompt.apply, peft=True, prompt_based=True, virtual_tokens=True),
    _row("freeze", freeze.apply, peft=False),
    _row("full", full.apply, peft=False),
)}

# The table's columns as sets of kinds, for membership tests
PEFT_METHODS = frozenset(k for k, s in SPECS.items() if s.peft)
MERGEABLE = frozenset(k for k, s in SPECS.items() if s.mergeable)
PROMPT_BASED = frozenset(k for k, s in SPECS.items() if s.prompt_based)
VIRTUAL_TOKENS = frozenset(k for k, s in SPECS.items() if s.virtual_tokens)


def check(method, device) -> None:
    """Refuse a method this machine cannot run, before anything is loaded."""
    refuse = SPECS[method.kind].check
    if refuse is not None:
        refuse(device)


def apply(model, method, task: str = "classification"):
    """Wrap ``model`` for ``method``; afterwards only the method's parameters require grad.

    ``task`` picks PEFT's task type: a sequence classifier keeps its new head trainable and saved
    (``SEQ_CLS``); a causal LM keeps its own output layer and PEFT shifts labels past virtual tokens
    (``CAUSAL_LM``).
    """
    from tunekit import task_kinds

    return SPECS[method.kind].apply(model, method, task_type="CAUSAL_LM" if task_kinds.kind(task).causal else "SEQ_CLS")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
