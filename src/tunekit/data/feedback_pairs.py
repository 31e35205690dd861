"""Preference pairs from production feedback: a corrected answer on a served chat answer is a pair.

``pairs_from_feedback(feedback, model)`` takes feedback rows as the request log returns them
(``RequestLog.feedback_since``: each with its logged request under ``request``) and makes one
pair per usable row:

- prompt: the logged request's ``messages`` (system, user and assistant turns, as logged: PII-redacted);
- chosen: the feedback's ``answer`` (the answer that should have been given);
- rejected: the answer the model gave, as logged (``response[0].text``).

The rating does not matter: an ``answer`` says the model's answer was not the one wanted, whatever
the stars. A choice between two answers is the same feedback: on the request whose answer lost,
``answer`` = the text of the one preferred. Feedback on another model's requests, or on a request
that was not answered (status 200), is not this model's and is ignored (not counted). Every other
row that makes no pair is counted under ``skipped`` with its reason:

- ``no_answer``: a rating or comment only (nothing says what was preferred);
- ``not_chat``: a completions request (a raw ``prompt``, not a conversation) or one without messages;
- ``no_logged_answer``: the log holds no answer to reject (a stream cut before its first token);
- ``identical``: the corrected answer is the model's answer (whitespace aside): it teaches nothing.

Each pair keeps its ``request_id`` and ``feedback_id``, so the retrain can write them beside the
pair and deduplicate pairs as it does other feedback rows. This module reads no database: the
composition root (``pipeline.retrain``) reads ``serving.db`` and passes the rows here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SKIP_REASONS", "FeedbackPair", "FeedbackPairs", "pairs_from_feedback"]

ROLES = ("system", "user", "assistant")
SKIP_REASONS = {
    "no_answer": "a rating or comment without a corrected answer",
    "not_chat": "not a chat request (completions prompt or no messages)",
    "no_logged_answer": "no logged answer to reject",
    "identical": "the corrected answer is the model's own answer",
}


@dataclass(frozen=True)
class FeedbackPair:
    """One pair from one feedback row: the prompt's messages, the preferred and the non-preferred answer."""

    request_id: str
    feedback_id: int
    prompt: list[dict]
    chosen: str
    rejected: str

    def openai_row(self) -> dict:
        """The pair in OpenAI's preference fine-tuning format, with where it came from under ``metadata``."""
        return {"input": {"messages": [dict(m) for m in self.prompt]},
                "preferred_output": [{"role": "assistant", "content": self.chosen}],
                "non_preferred_output": [{"role": "assistant", "content": self.rejected}],
                "metadata": {"request_id": self.request_id, "feedback_id": self.feedback_id}}


@dataclass
class FeedbackPairs:
    """The pairs made, and how many feedback rows made none, by reason (keys of ``SKIP_REASONS``)."""

    pairs: list[FeedbackPair] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))

    def describe_skipped(self) -> str:
        """``"1 the corrected answer is the model's own answer, 2 a rating ..."``; ``"none"`` when nothing was skipped."""
        return ", ".join(f"{n} {SKIP_REASONS[k]}" for k, n in self.skipped.items() if n) or "none"


def pairs_from_feedback(feedback: list[dict[str, Any]], model: str) -> FeedbackPairs:
    """The pairs feedback on model ``model``'s answered chat requests makes, oldest feedback first."""
    out = FeedbackPairs()
    for fb in feedback:
        req = fb.get("request") or {}
        if req.get("model") != model or req.get("status") != 200:
            continue
        reason, pair = _pair(fb, req)
        if pair is None:
            out.skipped[reason] += 1
        else:
            out.pairs.append(pair)
    return out


def _pair(fb: dict, req: dict) -> tuple[str, FeedbackPair | None]:
    if not fb.get("answer") or not str(fb["answer"]).strip():
        return "no_answer", None
    body = req.get("request") or {}
    prompt = _prompt(body.get("messages"))
    if prompt is None:
        return "not_chat", None
    response = req.get("response")
    logged = response[0].get("text") if isinstance(response, list) and response and isinstance(response[0], dict) else None
    if not isinstance(logged, str) or not logged.strip():
        return "no_logged_answer", None
    if _norm(fb["answer"]) == _norm(logged):
        return "identical", None
    return "", FeedbackPair(request_id=str(req.get("id")), feedback_id=int(fb["id"]), prompt=prompt, chosen=fb["answer"], rejected=logged)


def _prompt(messages: Any) -> list[dict] | None:
    """The conversation the answer replied to: its system, user and assistant turns (other roles
    left out, as the SFT retrain does); None without a user turn, with non-text content, or when it
    ends with an assistant turn."""
    if not isinstance(messages, list):
        return None
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") in ROLES]
    if any(not isinstance(m.get("content"), str) for m in turns):
        return None  # content parts (images, ...): not a conversation preference tuning reads
    prompt = [{"role": m["role"], "content": m["content"]} for m in turns]
    if not prompt or prompt[-1]["role"] == "assistant" or not any(m["role"] == "user" for m in prompt):
        return None
    return prompt


def _norm(text: str) -> str:
    return " ".join(str(text).split())
