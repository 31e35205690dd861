"""Production traffic of one model, read from the server's request log (``serving.db``).

Only answered requests (HTTP 200) of the model's inference route count. A classification or
regression request contributes one row per input text, with the prediction the server returned
for it; a chat request contributes the text of its user turns. Feedback counts toward live quality
when it names the correct label (or value) of a request with a single input, since a label given
for a batch of several texts cannot say which of them it is about; those are counted as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunekit import task_kinds
from tunekit.artifacts import Workspace
from tunekit.errors import ConfigError
from tunekit.monitor.annotation import ANNOTATION_KEY
from tunekit.monitor.reference import user_text
from tunekit.data.multitask import feedback_label

ROUTES = {"classification": ("/v1/classify",), "regression": ("/v1/predict",),
          "generation": ("/v1/chat/completions", "/v1/completions")}


@dataclass
class Traffic:
    """What the log holds for one model in the window, one entry per input text."""

    requests: int = 0
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)    # classification: the predicted label per text
    scores: list[float] = field(default_factory=list)  # classification: its probability (confidence)
    values: list[float] = field(default_factory=list)  # regression: the predicted value per text
    given: list = field(default_factory=list)          # feedback: the correct label (or value) ...
    answered: list = field(default_factory=list)       # ... and what the model answered, aligned
    ratings: list[int] = field(default_factory=list)
    feedback_skipped: int = 0
    first_at: float | None = None
    last_at: float | None = None


def read(workspace: Path, name: str, version: str | None, task: str, since: float) -> Traffic:
    """Requests and feedback for model ``name`` (and ``version``, when given) logged at or after ``since``."""
    from tunekit.serve.requestlog import RequestLog

    path = Workspace(workspace).serving_db
    if not path.is_file():
        raise ConfigError(f"workspace: no request log {path}; point --workspace at the folder the server was started with "
                          "(it writes serving.db there unless log_requests is false)")
    log = RequestLog(path)
    try:
        rows, feedback = log.requests_since(since), log.feedback_since(since)
    finally:
        log.close()
    traffic = Traffic()
    for row in rows:
        if _ours(row, name, version, task):
            _add_request(traffic, row, task)
    for item in feedback:
        # labels from the annotation queue are of rows picked for being hard: no random sample, so not live quality
        if _ours(item["request"], name, version, task) and item.get("key_id") != ANNOTATION_KEY:
            _add_feedback(traffic, item, task)
    return traffic


def _ours(row: dict, name: str, version: str | None, task: str) -> bool:
    return (row.get("model") == name and (version is None or row.get("version") == version)
            and row.get("status") == 200 and row.get("route") in ROUTES["generation" if task_kinds.kind(task).causal else task])  # every causal model is chatted with


def _add_request(traffic: Traffic, row: dict, task: str) -> None:
    request, response = row.get("request") or {}, row.get("response") or []
    if task_kinds.kind(task).causal:
        texts = [user_text(request["messages"])] if "messages" in request else _prompts(request.get("prompt"))
    else:
        texts = [str(t) for t in request.get("inputs") or []]
        if len(response) != len(texts):
            return  # not a complete answer: nothing to pair the texts with
        if task_kinds.kind(task).labelled:
            traffic.labels += [str(p["label"]) for p in response]
            traffic.scores += [float(p["score"]) for p in response]
        else:
            traffic.values += [float(v) for v in response]
    traffic.requests += 1
    traffic.texts += texts
    traffic.first_at = row["created_at"] if traffic.first_at is None else traffic.first_at
    traffic.last_at = row["created_at"]


def _prompts(prompt) -> list[str]:
    if prompt is None:
        return []
    return [str(prompt)] if isinstance(prompt, str) else [str(p) for p in prompt]


def _add_feedback(traffic: Traffic, item: dict, task: str) -> None:
    if item.get("rating") is not None:
        traffic.ratings.append(int(item["rating"]))
    label, response = item.get("label"), item["request"].get("response") or []
    if not label or task_kinds.kind(task).causal:
        return
    index = item.get("input_index")
    index = 0 if index is None and len(response) == 1 else index
    if index is None or not 0 <= index < len(response):
        traffic.feedback_skipped += 1  # an old row on a request of several inputs: which one it corrects is unknown
        return
    if task_kinds.kind(task).labelled:
        traffic.given.append(feedback_label(label, item["request"].get("request") or {}))  # multi-task: within the request's task
        traffic.answered.append(str(response[index]["label"]))
        return
    try:
        traffic.given.append(float(label))
    except ValueError:
        traffic.feedback_skipped += 1  # a regression label that is not a number
        return
    traffic.answered.append(float(response[index]))
