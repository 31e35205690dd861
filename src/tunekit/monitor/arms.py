"""Champion against challenger on live traffic, per arm, from the request log.

While a shadow or canary deployment runs (``serve.deployment``), the log holds three kinds of rows
of the monitored model: the champion's answers, the canary's (``version`` = the challenger's) and
the shadow's (``request.shadow_of`` names the champion request it copied). Per arm this reads:

- ``requests``, ``latency_ms`` mean and 95th percentile (a shadow's is its background forward
  pass alone, the others' the whole request);
- ``flagged``: the share of requests with a guardrail flag (a shadow row carries its champion
  request's input flags, since it saw the same input);
- ``agreement``: for shadowed inputs, the share where the challenger's label (or value, to 4
  places) equals the champion's;
- ``labelled``: live quality from feedback (accuracy with its Wilson interval, or RMSE and MAE).
  Feedback on a champion request grades the champion *and* the shadow's answer to the same input,
  so shadowing collects the challenger's live accuracy with no user ever seeing it; feedback on a
  canary request grades the challenger. While shadow rows exist, the champion is graded only on
  the requests that were shadowed, so both arms rest on the same inputs (a paired comparison,
  not the champion's whole history against the shadow's few days).

``correct`` and ``n`` of each arm are what ``monitor.decide`` decides on.

For a generation model, a row's arm is read from ``request.arm`` (a challenger loaded from a folder
has no version to tell it by), ``agreement`` is the share of shadowed answers whose text equals the
champion's exactly, and ``grader_rates`` runs grader definitions (``tunekit monitor --graders
FILE``) on the shadowed pairs: the challenger's answer is the sample, the champion's the item's
``reference``; model graders judge through a ``complete`` function (``--judge``, a local model).
There are no feedback labels to grade generated text by, so ``labelled`` stays empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tunekit import task_kinds
from tunekit.data.multitask import feedback_label
from tunekit.monitor.annotation import ANNOTATION_KEY
from tunekit.monitor.production import ROUTES
from tunekit.monitor.stats import live_regression, wilson


@dataclass
class ArmRows:
    """What the log holds for one arm in the window."""

    latency: list[float] = field(default_factory=list)
    flagged: int = 0
    given: list = field(default_factory=list)     # feedback: correct label (value) ...
    answered: list = field(default_factory=list)  # ... and this arm's answer to that input
    slices: list = field(default_factory=list)    # ... and the request's metadata, aligned (per-slice metrics)


def routes(task: str) -> tuple[str, ...]:
    return ROUTES["generation" if task_kinds.kind(task).causal else task]


def split(rows: list[dict], feedback: list[dict], name: str, champion: str | None, challenger: str | None, task: str,
          challenger_name: str | None = None) -> dict:
    """The per-arm rows of model ``name``: ``champion`` and ``challenger`` are versions (the
    challenger's rows are its canary and shadow answers); ``challenger_name``: the challenger's when
    it is not ``name`` (a generation adapter of another name)."""
    arms = {"champion": ArmRows(), "challenger": ArmRows()}
    names = {name, challenger_name or name}
    ours = [r for r in rows if r.get("model") in names and r.get("status") == 200 and r.get("route") in routes(task)]
    shadows: dict[str, dict] = {}
    answers: dict[str, list] = {}
    for row in ours:
        request = row.get("request") or {}
        arm = _arm(row, champion, challenger)
        if arm is None:
            continue
        arms[arm].latency.append(float(row.get("latency_ms") or 0.0))
        arms[arm].flagged += bool(row.get("flags"))
        if request.get("shadow_of"):
            shadows[request["shadow_of"]] = row
        else:
            answers[row["id"]] = row.get("response") or []
    agreement = _agreement(shadows, answers, task)
    requests = {row["id"]: row for row in ours}
    pairs = [(requests[parent], shadow) for parent, shadow in shadows.items() if parent in requests]
    for item in feedback:
        parent = item["request"]
        if item.get("key_id") == ANNOTATION_KEY:
            continue  # queue labels are of hand-picked hard rows: they would bias the arms' accuracy
        if parent.get("model") != name or parent.get("route") not in routes(task) or parent.get("status") != 200:
            continue
        arm = _arm(parent, champion, challenger)
        if shadows and arm == "champion" and parent["id"] not in shadows:
            continue  # with a shadow, both arms are graded on the same (shadowed) requests: a paired comparison, not two periods
        graded = [(arm, parent)] + ([("challenger", shadows[parent["id"]])] if parent["id"] in shadows else [])
        for arm, row in graded:
            if arm is not None:
                _grade(arms[arm], item, row, task)
    return {"arms": arms, "agreement": agreement, "pairs": pairs}


def summary(parts: dict, task: str, seed: int = 0) -> dict:
    """The report's ``arms`` section: one entry per arm, and the agreement of shadowed inputs."""
    out = {}
    for arm, rows in parts["arms"].items():
        lat = np.asarray(rows.latency, dtype=float)
        entry = {"requests": len(lat), "latency_ms_mean": float(lat.mean()) if len(lat) else None,
                 "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else None,
                 "flagged_share": rows.flagged / len(lat) if len(lat) else None}
        if task_kinds.kind(task).labelled:
            entry["labelled"] = accuracy(rows.given, rows.answered)
        elif task_kinds.kind(task).numeric:
            entry["labelled"] = live_regression(rows.given, rows.answered, seed)
        out[arm] = entry
    agree, compared = parts["agreement"]
    low, high = wilson(agree, compared)
    out["agreement"] = {"compared": compared, "agree": agree, "share": agree / compared if compared else None,
                        "low": low if compared else None, "high": high if compared else None}
    return out


def accuracy(given: list, answered: list) -> dict:
    """Accuracy with its Wilson interval (the decision's evidence; the macro-F1 bootstrap of the
    model's own live section is left out here, it costs seconds per arm and decides nothing)."""
    n, k = len(given), sum(g == a for g, a in zip(given, answered))
    if n == 0:
        return {"n": 0}
    low, high = wilson(k, n)
    return {"n": n, "correct": k, "accuracy": k / n, "accuracy_low": low, "accuracy_high": high}


def _arm(row: dict, champion: str | None, challenger: str | None) -> str | None:
    version = row.get("version")
    if (row.get("request") or {}).get("arm") in ("canary", "shadow"):  # the server notes the arm while a deployment runs
        return "challenger" if version == challenger else None  # (a challenger from a folder has no version: None == None)
    if challenger is not None and version == challenger:
        return "challenger"
    if version == champion and not (row.get("request") or {}).get("shadow_of"):
        return "champion"
    return None


def _labels(response: list) -> list:
    """What agreement compares: the label, the value to 4 places, or (generation) the whole answer text."""
    return [(p["label"] if "label" in p else p.get("text")) if isinstance(p, dict) else round(float(p), 4) for p in response]


def shadow_items(pairs: list[tuple[dict, dict]]) -> list[tuple[dict, str]]:
    """Generation: one ``(item, shadow answer)`` per shadowed answer, for graders. The item has ``prompt`` (the
    last user turn, or the completion prompt), ``messages`` (chat), ``reference`` and ``champion`` (the champion's
    answer to the same input, which the client got), and ``id`` (the champion request's)."""
    out = []
    for parent, shadow in pairs:
        request = parent.get("request") or {}
        theirs, mine = shadow.get("response") or [], parent.get("response") or []
        prompts = request.get("prompt") or [next((m["content"] for m in reversed(request.get("messages") or []) if m.get("role") == "user"), "")]
        for i, (a, b) in enumerate(zip(mine, theirs)):
            if not (isinstance(a, dict) and isinstance(b, dict)):
                continue
            item = {"id": parent["id"] if len(mine) == 1 else f"{parent['id']}/{i}", "prompt": prompts[i] if i < len(prompts) else "",
                    "reference": a.get("text", ""), "champion": a.get("text", "")}
            if request.get("messages"):
                item["messages"] = request["messages"]
            out.append((item, b.get("text", "")))
    return out


def grader_rates(definitions: list[dict], pairs: list[tuple[dict, dict]], complete=None, allow_python: bool = False) -> list[dict]:
    """Pass rate of each grader on the shadowed pairs: the sample is the challenger's answer
    (``{{sample.output_text}}``), ``{{item.reference}}`` the champion's answer to the same input; a
    model grader (``label_model``, ``score_model``) judges through ``complete`` (model, messages, params) -> text."""
    from tunekit.evaluate.graders import grade

    items = shadow_items(pairs)
    out = []
    for d in definitions:
        results = [grade(d, item, {"output_text": answer}, complete=complete, allow_python=allow_python) for item, answer in items]
        passed = sum(r.passed for r in results)
        low, high = wilson(passed, len(results))
        out.append({"name": d.get("name", d["type"]), "type": d["type"], "total": len(results), "passed": passed,
                    "errors": sum(r.error is not None for r in results), "rate": passed / len(results) if results else None,
                    "low": low if results else None, "high": high if results else None,
                    "first_error": next((r.error for r in results if r.error), None)})
    return out


def _agreement(shadows: dict[str, dict], answers: dict[str, list], task: str) -> tuple[int, int]:
    agree = compared = 0
    for parent_id, shadow in shadows.items():
        mine, theirs = _labels(shadow.get("response") or []), _labels(answers.get(parent_id) or [])
        if len(mine) == len(theirs):
            compared += len(mine)
            agree += sum(a == b for a, b in zip(mine, theirs))
    return agree, compared


def _grade(rows: ArmRows, item: dict, row: dict, task: str) -> None:
    """One feedback label against this arm's answer to the same input (as ``production`` reads it)."""
    label, response = item.get("label"), row.get("response") or []
    if not label or task_kinds.kind(task).causal:
        return
    index = item.get("input_index")
    index = 0 if index is None and len(response) == 1 else index
    if index is None or not 0 <= index < len(response):
        return
    request = row.get("request") or {}
    if task_kinds.kind(task).labelled:
        rows.given.append(feedback_label(label, request))
        rows.answered.append(str(response[index]["label"]))
    else:
        try:
            rows.given.append(float(label))
        except ValueError:
            return
        rows.answered.append(float(response[index]))
    rows.slices.append(request.get("metadata") or {})
