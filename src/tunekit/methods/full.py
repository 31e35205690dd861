"""Full fine-tuning: every weight trains; the saved model is a complete checkpoint."""

from __future__ import annotations


def apply(model, method):
    for param in model.parameters():
        param.requires_grad_(True)
    return model
