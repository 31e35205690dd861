"""Multi-task classification (``data.task_column``): several label sets, one encoder, one head.

Each row's label is read as ``task:label``, so the frozen splits, the stratified split, the
reports and the registry all see one ordinary label list. What makes it multi-task is the
*restriction*: a row of task ``t`` may only be predicted as one of ``t``'s labels. Training masks
the other tasks' logits to -inf before the cross-entropy, and prediction renormalises the softmax
over the row's own task (``restrict``). A linear head restricted so is exactly one linear head per
task: a label's weights only ever receive gradients from its own task's rows, and the softmax over a
subset of logits equals the full softmax renormalised over that subset. So nothing downstream needs
a second kind of head; it needs to know each row's task, which the label carries on stored rows
and which a request names when it is served.
"""

from __future__ import annotations

import numpy as np
import torch

from tunekit.errors import InputError

SEP = ":"

__all__ = ["SEP", "allowed_matrix", "feedback_label", "label_name", "mask_logits", "restrict", "restrict_split", "row_tasks",
           "task_of", "tasks_of"]


def task_of(label: str) -> str:
    """The task of a namespaced label (``intent:card_arrival`` -> ``intent``)."""
    return label.split(SEP, 1)[0]


def label_name(label: str) -> str:
    """The label within its task (``intent:card_arrival`` -> ``card_arrival``)."""
    return label.split(SEP, 1)[1]


def tasks_of(labels: list[str]) -> dict[str, list[int]]:
    """Label ids per task, in label order; tasks in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(task_of(label), []).append(i)
    return out


def row_tasks(label_ids, labels: list[str]) -> list[str]:
    """The task of each row, read from its (namespaced) label."""
    return [task_of(labels[int(i)]) for i in label_ids]


def allowed_matrix(labels: list[str]) -> np.ndarray:
    """``allowed[i, j]``: labels i and j belong to the same task (row i's label, candidate j)."""
    tasks = np.asarray([task_of(label) for label in labels])
    return tasks[:, None] == tasks[None, :]


def mask_logits(logits: torch.Tensor, y: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Other tasks' logits set to -inf for each row (its task read from its label ``y``)."""
    return logits.masked_fill(~allowed[y], float("-inf"))


def restrict(probs: np.ndarray, tasks: list[str], labels: list[str]) -> np.ndarray:
    """Probabilities renormalised over each row's own task: equal to the softmax of that task's
    logits alone. An unknown task is an error rather than a silent all-zero row."""
    per_task = tasks_of(labels)
    mask = np.zeros_like(probs, dtype=bool)
    for r, task in enumerate(tasks):
        if task not in per_task:
            raise InputError(f"unknown task {task!r}; the model knows {', '.join(per_task)}")
        mask[r, per_task[task]] = True
    kept = np.where(mask, probs, 0.0)
    return (kept / kept.sum(axis=1, keepdims=True)).astype(probs.dtype)


def feedback_label(label, request: dict) -> str:
    """A correction sent with ``POST /v1/feedback`` as the served model's label name: for a
    multi-task request the server answered ``card_arrival`` within task ``intent``, and the model's
    label is ``intent:card_arrival`` (a label already given in that form is kept)."""
    label, task = str(label), request.get("task")
    return f"{task}{SEP}{label}" if task and not label.startswith(f"{task}{SEP}") else label


def restrict_split(probs: np.ndarray, data, split) -> np.ndarray:
    """``probs`` of the rows of ``split`` (a frozen split of ``data``) restricted to each row's own
    task, which its label names; unchanged for single-task data."""
    if not getattr(data, "multitask", False):
        return probs
    return restrict(probs, row_tasks(split["label"], data.labels), data.labels)
