"""The monitor's verdict as Prometheus gauges on the server's ``/metrics``.

``tunekit monitor`` runs from cron, in its own process; the server publishes the latest report it
finds in its workspace (``push_latest``, called when ``/metrics`` is scraped), so alerting rules
in Prometheus see drift beside latency and errors:

| gauge | labels | value |
|---|---|---|
| ``tunekit_drift_alerts`` | model | alerts in the latest monitor run (0: healthy) |
| ``tunekit_drift_detected`` | model, check | 1 when the check drifted, else 0 |
| ``tunekit_drift_statistic`` | model, check | the check's deciding statistic (KS D, AUC, JS ...) |
| ``tunekit_drift_p_value`` | model, check | its p-value, for checks that have one |
| ``tunekit_drift_inputs`` | model | production inputs in the monitored window |
| ``tunekit_drift_last_run_timestamp_seconds`` | model | when that monitor run finished |
| ``tunekit_live_accuracy`` / ``tunekit_live_macro_f1`` | model | on feedback-labelled requests |
| ``tunekit_live_rmse`` / ``tunekit_live_mae`` | model | regression, on feedback values |
| ``tunekit_live_labelled_feedback`` | model | how many feedback rows those numbers rest on |
| ``tunekit_arm_live_accuracy`` / ``tunekit_arm_live_labelled`` | model, arm | with a shadow or canary challenger: each arm's live accuracy and its feedback rows |
| ``tunekit_arm_agreement`` | model | share of shadowed inputs the challenger answered as the champion did |
| ``tunekit_slice_live_accuracy`` | model, field, value | with ``slice_by``: live accuracy per slice (the 50 largest) |
| ``tunekit_slice_alerts`` | model | slices behind the others by more than ``slice_margin`` |
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from tunekit.artifacts import Workspace

_LIVE = {"accuracy": "Accuracy", "macro_f1": "Macro F1", "rmse": "RMSE", "mae": "MAE"}


def push_gauges(metrics, report: dict) -> None:
    """Set the ``tunekit_drift_*`` and ``tunekit_live_*`` gauges of ``metrics`` (a ``ServerMetrics``) from a monitor report."""
    model = {"model": report["model"]["name"]}
    metrics.set_gauge("tunekit_drift_alerts", len(report["alerts"]), "Alerts raised by the latest `tunekit monitor` run.", model)
    metrics.set_gauge("tunekit_drift_inputs", report["traffic"]["inputs"], "Production inputs in the latest monitor run's window.", model)
    finished = datetime.fromisoformat(report["window"]["to"]).timestamp()
    metrics.set_gauge("tunekit_drift_last_run_timestamp_seconds", finished, "When the latest monitor run's window ended (Unix time).", model)
    for check in report["checks"]:
        labels = model | {"check": check["name"]}
        metrics.set_gauge("tunekit_drift_detected", float(check["drifted"]), "1 when the monitor check drifted, else 0.", labels)
        if _number(check.get("statistic")):
            metrics.set_gauge("tunekit_drift_statistic", check["statistic"], "The monitor check's deciding statistic (KS D, AUC, JS, ...).", labels)
        if _number(check.get("p_value")):
            metrics.set_gauge("tunekit_drift_p_value", check["p_value"], "The monitor check's p-value.", labels)
    labelled = report["live"].get("labelled") or {}
    metrics.set_gauge("tunekit_live_labelled_feedback", labelled.get("n", 0), "Feedback-labelled requests live quality rests on.", model)
    for key, title in _LIVE.items():
        if _number(labelled.get(key)):
            metrics.set_gauge(f"tunekit_live_{key}", labelled[key], f"{title} on feedback-labelled production requests.", model)
    _push_online(metrics, report.get("online") or {}, model)


def _push_online(metrics, online: dict, model: dict) -> None:
    """The production-loop gauges: per arm, agreement, per slice."""
    for arm, entry in (online.get("arms") or {}).items():
        if arm == "agreement":
            if _number(entry.get("share")):
                metrics.set_gauge("tunekit_arm_agreement", entry["share"], "Share of shadowed inputs the challenger answered as the champion did.", model)
            continue
        labelled = entry.get("labelled") or {}
        metrics.set_gauge("tunekit_arm_live_labelled", labelled.get("n", 0), "Feedback-labelled requests per arm (champion, challenger).", model | {"arm": arm})
        if _number(labelled.get("accuracy")):
            metrics.set_gauge("tunekit_arm_live_accuracy", labelled["accuracy"], "Live accuracy per arm on feedback-labelled requests.", model | {"arm": arm})
    for g in online.get("graders") or []:
        if _number(g.get("rate")):
            metrics.set_gauge("tunekit_shadow_grader_pass_rate", g["rate"], "Pass rate of a monitor grader on the shadowed pairs (the challenger's "
                              "answer graded against the champion's).", model | {"grader": str(g["name"])})
    slices = online.get("slices")
    if slices:
        metrics.set_gauge("tunekit_slice_alerts", len(slices["alerts"]), "Slices whose live accuracy is behind the others by more than slice_margin.", model)
        for entry in slices["slices"][:50]:
            metrics.set_gauge("tunekit_slice_live_accuracy", entry["accuracy"], "Live accuracy per slice of a request metadata field.",
                              model | {"field": slices["field"], "value": entry["value"]})


def latest(workspace: Path, name: str) -> dict | None:
    """The newest readable ``monitor.json`` of model ``name`` in ``workspace``, or None."""
    found = sorted(Workspace(workspace).monitor.glob(f"{slug(name)}-*/monitor.json"), key=_mtime, reverse=True)
    for path in found:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written right now, or removed: take the one before
        if report.get("model", {}).get("name") == name:
            return report
    return None


def push_latest(metrics, workspace: Path, name: str) -> bool:
    """``push_gauges`` with the newest report of ``name`` in ``workspace``; False when there is none yet."""
    report = latest(workspace, name)
    if report is None:
        return False
    push_gauges(metrics, report)
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
