"""What feedback the server takes: only feedback a later ``tunekit retrain --from-feedback`` can use.

``check_feedback(body, logged, loaded)`` checks a ``POST /v1/feedback`` body against the request it
is about (as the request log holds it) and the served model, and raises a 422 naming the field and
the fix for anything that could never be used:

- ``label`` is for classification and regression requests: for a classifier one of the model's
  labels (a multi-task request: one of its task's labels); for regression a number, as a string.
  ``answer`` is for generation requests (chat or completions).
- A correction (``label`` or ``answer``) on a request with several inputs (``inputs``) or prompts
  (``prompt``) must say which one with ``index`` (0-based); a ``rating`` or ``comment`` alone may
  be about the whole request.
- Feedback is taken on answered requests (status 200) only.

An ``answer`` on a chat completion is also a preference: ``tunekit retrain --from-feedback`` with
a ``task: preference`` config makes it a pair (prompt: the request's messages, chosen: ``answer``,
rejected: the logged answer; ``data.feedback_pairs``). A choice between two answers to the same
prompt is sent the same way: on the request whose answer lost, ``answer`` = the preferred text.
"""

from __future__ import annotations

import math
from typing import Any

from tunekit import task_kinds
from tunekit.data.multitask import SEP, label_name, tasks_of
from tunekit.serve.inputs import RequestError
from tunekit.serve.loading import LoadedModel
from tunekit.serve.schemas import FeedbackRequest

GENERATION_ROUTES = ("/v1/chat/completions", "/v1/completions")


def check_feedback(body: FeedbackRequest, logged: dict[str, Any], loaded: LoadedModel) -> None:
    """422 (``invalid_feedback``) for feedback that names a label the model does not have, a label on
    a generation request (or an answer on a classification one), or a correction on a multi-input
    request without ``index``; 422 too for feedback on a request that failed."""
    request_id = body.request_id
    if logged.get("status") != 200:
        _refuse(f"request_id: request {request_id!r} was not answered (status {logged.get('status')}); feedback is taken on answered "
                "requests only", "request_id")
    generation = logged.get("route") in GENERATION_ROUTES
    if generation and body.label is not None:
        _refuse(f"label: request {request_id!r} was answered by a generation model; send the answer it should have given in `answer`", "label")
    if not generation and body.answer is not None:
        _refuse(f"answer: request {request_id!r} was answered by a {loaded.task} model; send the correct label in `label`", "answer")
    _check_index(body, logged.get("request") or {})
    if body.label is not None:
        _check_label(body.label, logged, loaded)


def _check_index(body: FeedbackRequest, request: dict) -> None:
    items = request.get("inputs", request.get("prompt"))
    count = len(items) if isinstance(items, list) else 1
    field = "inputs" if "inputs" in request else "prompt"
    correction = "label" if body.label is not None else "answer" if body.answer is not None else None
    if body.index is None:
        if correction is not None and count > 1:
            _refuse(f"index: request {body.request_id!r} had {count} {field}; say which one the {correction} is for with "
                    f"`index` (0 to {count - 1})", "index")
    elif body.index >= count:
        _refuse(f"index: {body.index} is out of range; request {body.request_id!r} had {count} {field} (index 0 to {count - 1})", "index")


def _check_label(label: str, logged: dict, loaded: LoadedModel) -> None:
    if task_kinds.kind(loaded.task).numeric:
        try:
            ok = math.isfinite(float(label))
        except ValueError:
            ok = False
        if not ok:
            _refuse(f"label: {label!r} is not a number; for the regression model {loaded.name!r} send the correct value as a string, "
                    'such as "3.5"', "label")
        return
    labels = list(getattr(loaded.model, "labels", None) or [])
    task = (logged.get("request") or {}).get("task")
    if task:  # a multi-task request: the labels of its task, by their short name or as task:label
        names = [label_name(labels[i]) for i in tasks_of(labels).get(task, [])]
        label = label[len(task) + len(SEP):] if label.startswith(f"{task}{SEP}") else label
    else:
        names = labels
    if label not in names:
        where = f" for task {task!r}" if task else ""
        _refuse(f"label: {label!r} is not a label of model {loaded.name!r}{where}; use one of: {', '.join(names)}", "label")


def _refuse(message: str, param: str) -> None:
    raise RequestError(message, "invalid_feedback", param)
