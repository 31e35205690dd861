"""Full fine-tuning: every weight trains; the saved model is a complete checkpoint."""

from __future__ import annotations


def apply(model, method, task_type: str = "SEQ_CLS"):
    for param in model.parameters():
        param.requires_grad_(True)
    return model
