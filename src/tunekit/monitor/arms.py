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


def split(rows: list[dict], feedback: list[dict], name: str, champion: str | None, challenger: str | None, task: str) -> dict:
    """The per-arm rows of model ``name``: ``champion`` and ``challenger`` are versions (the
    challenger's rows are its canary and shadow answers)."""
    arms = {"champion": ArmRows(), "challenger": ArmRows()}
    ours = [r for r in rows if r.get("model") == name and r.get("status") == 200 and r.get("route") in routes(task)]
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
    return {"arms": arms, "agreement": agreement}


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
    if challenger is not None and version == challenger:
        return "challenger"
    if version == champion and not (row.get("request") or {}).get("shadow_of"):
        return "champion"
    return None


def _labels(response: list) -> list:
    return [p["label"] if isinstance(p, dict) else round(float(p), 4) for p in response]


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
