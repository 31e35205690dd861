"""(IA)^3 through PEFT: learnt rescaling vectors on keys, values and feed-forward activations.

Without configured modules PEFT's own per-architecture defaults apply (for BERT: key, value and
the dense output layers), so tunekit does not keep a second table that could drift from PEFT's.
"""

from __future__ import annotations


def apply(model, method, task_type: str = "SEQ_CLS"):
    from peft import IA3Config, TaskType, get_peft_model

    config = IA3Config(task_type=TaskType[task_type], target_modules=method.target_modules,
                       feedforward_modules=method.feedforward_modules)
    return get_peft_model(model, config)
