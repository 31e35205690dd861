"""Monitor stage: production traffic against the training data, and live quality from feedback.

``run`` reads the requests a server logged for one model in a window (``serving.db``), compares
them with the reference statistics stored next to the model at training time (``reference.json``,
see ``monitor.reference``), and writes a report:

1. resolve the model (registry reference or directory) and load its reference;
2. read the window's answered requests of that model, and the feedback on them;
3. with enough traffic, one drift check per feature (``monitor.drift``): text length, out-of-
   vocabulary rate, predicted labels or values, confidence, and sentence-embedding drift;
4. live quality on feedback: accuracy and macro F1 (or RMSE and MAE) with intervals, ratings;
   with a shadow or canary challenger, the same per arm, with agreement, latency and flags; per-slice
   live accuracy (``slice_by``); with ``decide``, the live decision (``monitor.online``);
5. ``monitor.json``, ``monitor.md`` and a self-contained ``monitor.html`` with plots in
   ``WORKSPACE/monitor/<model>-<timestamp>/``.

``MonitorResult.alerts`` lists every threshold crossed, in words; the CLI exits 1 when there is
one, so cron or CI can act (retrain, roll back, page someone). The server publishes the latest
report as gauges (``push_latest``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tunekit import task_kinds
from tunekit.artifacts import Manifest, Workspace
from tunekit.monitor import drift, production, reference
from tunekit.monitor.embed import Embedder
from tunekit.serve.gauges import latest, push_gauges, push_latest, slug
from tunekit.monitor.settings import MonitorSettings, load_settings, parse_since
from tunekit.monitor.stats import live_classification, live_regression, wilson

__all__ = ["MonitorResult", "MonitorSettings", "latest", "load_settings", "parse_since", "push_gauges", "push_latest", "reference", "run"]


@dataclass
class MonitorResult:
    """What one monitor run found; ``report`` is what ``monitor.json`` holds."""

    alerts: list[str]
    status: str            # "alert", "ok" or "not enough traffic"
    report: dict
    out_dir: Path
    files: dict[str, Path]

    @property
    def html(self) -> Path:
        return self.files["html"]

    def push_gauges(self, metrics) -> None:
        """Publish this run's verdict on a server's ``ServerMetrics`` (``tunekit_drift_*``, ``tunekit_live_*``)."""
        push_gauges(metrics, self.report)


def run(settings: MonitorSettings, embedder: Embedder | None = None, now: float | None = None) -> MonitorResult:
    """Monitor ``settings.model`` over the last ``settings.since``; ``embedder`` replaces the reference's
    (it must carry the same ``name``); ``now`` (Unix time) is for tests."""
    now = time.time() if now is None else now
    model_dir, name, version = _resolve(settings)
    ref, ref_emb = reference.load(model_dir)
    since = now - settings.window_seconds
    traffic = production.read(settings.workspace_dir, name, version, ref["task"], since)

    enough = len(traffic.texts) >= settings.min_requests
    checks, plot = drift.checks(settings, ref, ref_emb, traffic, embedder) if enough else ([], {})
    live = _live(ref["task"], traffic, settings.seed)
    alerts = [c["alert"] for c in checks if c["alert"]] + _live_alerts(settings, live)
    from tunekit.monitor.online import online  # the production loop: arms, slices, the live decision

    loop, loop_alerts = online(settings, name, version, ref["task"], since)
    alerts += loop_alerts
    status = "alert" if alerts else ("ok" if enough else "not enough traffic")

    report = {
        "model": {"ref": settings.model, "name": name, "version": version, "dir": str(model_dir)}, "task": ref["task"], "status": status,
        "window": {"since": settings.since, "from": _iso(since), "to": _iso(now)},
        "traffic": {"requests": traffic.requests, "inputs": len(traffic.texts), "min_requests": settings.min_requests, "enough": enough,
                    "first_at": _iso(traffic.first_at), "last_at": _iso(traffic.last_at)},
        "alerts": alerts, "checks": checks, "live": live, "online": loop,
        "reference": {k: ref.get(k) for k in ("created_at", "data_fingerprint", "rows")},
        "settings": settings.model_dump(mode="json"),
    }
    out_dir = _new_dir(Workspace(settings.workspace_dir).monitor, f"{slug(name)}-{datetime.fromtimestamp(now).strftime('%Y%m%d-%H%M%S')}")
    # matplotlib only when a report is written: the server imports this package for its gauges
    from tunekit.monitor import report as report_mod

    files = report_mod.write(report, ref, plot, out_dir)
    return MonitorResult(alerts=alerts, status=status, report=report, out_dir=out_dir, files=files)


def _resolve(settings: MonitorSettings) -> tuple[Path, str, str | None]:
    """(model directory, the name the server logs, registry version or None for a plain directory)."""
    from tunekit.registry import resolve_model

    ref = resolve_model(settings.model, settings.tracking_uri)
    if ref.version is not None:
        return ref.path, ref.name, ref.version
    return ref.path, Manifest.read(ref.path).name, None


def _live(task: str, traffic: production.Traffic, seed: int) -> dict:
    live: dict = {"skipped": traffic.feedback_skipped}
    if task_kinds.kind(task).labelled:
        live["labelled"] = live_classification(traffic.given, traffic.answered, seed)
    elif task_kinds.kind(task).numeric:
        live["labelled"] = live_regression(traffic.given, traffic.answered, seed)
    if traffic.ratings:
        r = np.asarray(traffic.ratings)
        positive = int((r > 0).sum())
        low, high = wilson(positive, len(r))
        live["ratings"] = {"n": len(r), "mean": float(r.mean()), "positive_share": positive / len(r), "positive_low": low, "positive_high": high}
    return live


def _live_alerts(s: MonitorSettings, live: dict) -> list[str]:
    q = live.get("labelled") or {}
    if s.min_feedback_accuracy is None or "accuracy" not in q or q["n"] < s.min_feedback:
        return []
    if q["accuracy"] >= s.min_feedback_accuracy:
        return []
    return [(f"live accuracy {q['accuracy']:.3f} (95% interval {q['accuracy_low']:.3f}-{q['accuracy_high']:.3f}) on {q['n']} "
            f"feedback-labelled requests is below min_feedback_accuracy {s.min_feedback_accuracy:g}")]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _new_dir(parent: Path, stem: str) -> Path:
    for n in range(1, 1000):
        path = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: too many monitor runs named {stem}")
