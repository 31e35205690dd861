"""What the console's pages show that no HTTP API serves: runs (their report cards), the registry
(versions, aliases, audit events) and production traffic (the request log and monitor reports).

Each function reads the workspace through the module that owns the data (``Workspace`` for paths,
``tunekit.registry`` for versions and events, ``RequestLog`` for traffic) and returns plain dicts for
the templates, so the pages hold no logic and the numbers are the ones the CLI prints.

Visibility: an ``admin`` key sees everything; another key sees the runs and models of its project,
whose names service mode starts with ``PROJECT-`` (``tunekit.service.runner.job_config``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tunekit import registry
from tunekit.artifacts import Workspace
from tunekit.config import lower_is_better
from tunekit.errors import NotFound, RegistryError
from tunekit.ui.session import Session

__all__ = ["find_run", "model_detail", "models", "monitor_reports", "production", "rollback_preview", "runs", "visible"]


def visible(session: Session, name: str) -> bool:
    """Whether the session's key may see the run or model ``name``."""
    return session.allows("admin") or name.startswith(f"{session.project}-")


# --- runs -------------------------------------------------------------------------------------------


def runs(workspace: Workspace, session: Session) -> list[dict]:
    """Every run folder of the workspace, newest first: its card's headline, or why it has none yet."""
    found = []
    folders = sorted((p for p in workspace.runs.iterdir() if p.is_dir()), reverse=True) if workspace.runs.is_dir() else []
    for folder in folders:
        row = _run_row(folder)
        if row is not None and visible(session, row["name"]):
            found.append(row)
    return found


def find_run(workspace: Workspace, session: Session, run_id: str) -> dict:
    """One run's row and card; ``NotFound`` (404) naming what exists."""
    folder = workspace.run(run_id)
    inside = run_id == folder.name and not run_id.startswith(".")  # no `..`, no path: a run id names a folder of runs/
    row = _run_row(folder) if inside and folder.is_dir() else None
    if row is None or not visible(session, row["name"]):
        raise NotFound(f"no run {run_id!r} in {workspace.runs}; the Runs page lists them", param="run_id")
    return row


def _run_row(folder: Path) -> dict | None:
    card_path = folder / "report.json"
    if not card_path.is_file():
        config = folder / "config.json"
        name = _json(config).get("name") if config.is_file() else None
        if name is None:
            return None  # not a run folder
        return {"id": folder.name, "name": name, "card": None, "has_html": False, "status": "no report card yet (running, or stopped early)"}
    card = _json(card_path)
    primary = card.get("primary", "")
    versus = (card.get("analysis") or {}).get("versus_baseline") or {}
    comparison = versus.get(primary) if isinstance(versus.get(primary), dict) else None
    reg = card.get("registry") or {}
    return {
        "id": folder.name, "name": card.get("name", folder.name), "task": card.get("task"), "base_model": card.get("base_model"),
        "method": card.get("method"), "primary": primary, "lower_is_better": lower_is_better(primary),
        "model": _number((card.get("model") or {}).get("metrics", {}).get(primary)),
        "baseline": _number((card.get("baseline") or {}).get("metrics", {}).get(primary)),
        "baseline_name": (card.get("baseline") or {}).get("name"),
        "diff": _number(comparison.get("diff")) if comparison else None,
        "low": _number(comparison.get("low")) if comparison else None,
        "high": _number(comparison.get("high")) if comparison else None,
        "passed": reg.get("passed"), "alias": reg.get("alias"), "version": reg.get("version"), "reason": reg.get("reason", ""),
        "history": (card.get("train") or {}).get("history") or [],
        "metrics": {k: v for k, v in ((card.get("model") or {}).get("metrics") or {}).items() if isinstance(v, int | float)},
        "baseline_metrics": {k: v for k, v in ((card.get("baseline") or {}).get("metrics") or {}).items() if isinstance(v, int | float)},
        "card": card, "has_html": (folder / "report.html").is_file(), "status": "finished",
    }


def _json(path: Path) -> dict:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


# --- the registry -----------------------------------------------------------------------------------


def models(mlc, session: Session) -> list[dict]:
    """Registered models with their version count and aliases."""
    rows = []
    for rm in mlc.search_registered_models():
        if not visible(session, rm.name):
            continue
        versions = mlc.search_model_versions(f"name = '{rm.name}'")
        rows.append({"name": rm.name, "versions": len(versions), "aliases": dict(rm.aliases or {}),
                     "updated": rm.last_updated_timestamp})
    return rows


def model_detail(mlc, session: Session, name: str) -> dict:
    """A model's versions (aliases, metric against baseline, run) and its audit history, newest first."""
    if not visible(session, name):
        raise NotFound(f"no registered model {name!r} in this project; the Models page lists them", param="name")
    versions = []
    for mv in registry.list_versions(mlc, name):
        tags = mv.tags or {}
        primary = tags.get("primary_metric", "")
        versions.append({"version": str(mv.version), "aliases": list(mv.aliases or []), "primary": primary,
                         "test": _tag_number(tags.get(f"test_{primary}")), "baseline": _tag_number(tags.get(f"baseline_{primary}")),
                         "created": mv.creation_timestamp, "run": mv.run_id or "",
                         "run_dir": Path(tags["run_dir"]).name if tags.get("run_dir") else None})
    champion = next((v["version"] for v in versions if "champion" in v["aliases"]), None)
    return {"name": name, "versions": versions, "champion": champion, "history": list(reversed(registry.history(mlc, name))),
            "rollback": rollback_preview(mlc, name)}


def rollback_preview(mlc, name: str) -> tuple[str, str] | None:
    """(current champion, the version a rollback gives the alias back to), or None when there is nothing to roll back."""
    try:
        return registry.rollback_target(mlc, name)
    except RegistryError:
        return None


def _tag_number(tag: str | None) -> float | None:
    try:
        return None if tag in (None, "") else float(tag)
    except ValueError:
        return None


# --- production -------------------------------------------------------------------------------------

WINDOWS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


def production(workspace: Workspace, window: str, now: float | None = None) -> dict:
    """Request rate, latency and error rate per time bucket, and guardrail flags, from ``serving.db``.

    Read with a plain read-only SQLite connection rather than a ``RequestLog``: that class starts a
    writer thread, and a page view must never write to (or migrate) the server's log.
    """
    now = time.time() if now is None else now
    seconds = WINDOWS[window]
    since = now - seconds
    bucket = max(60, seconds // 60)  # 60 points at most
    rows = _requests(workspace.serving_db, since)
    series: dict[int, dict] = {}
    flags: Counter = Counter()
    flagged = []
    for row in rows:
        b = int((row["created_at"] - since) // bucket)
        s = series.setdefault(b, {"n": 0, "errors": 0, "latencies": []})
        s["n"] += 1
        s["errors"] += int((row["status"] or 0) >= 400)
        if row["latency_ms"] is not None:
            s["latencies"].append(row["latency_ms"])
        row_flags = _loads(row["flags_json"]) or []
        for flag in row_flags:
            if isinstance(flag, dict):
                flags[(flag.get("kind"), flag.get("where"), flag.get("action"))] += 1
        if row_flags:
            flagged.append({"id": row["id"], "at": row["created_at"], "model": row["model"], "route": row["route"],
                            "status": row["status"], "flags": [f for f in row_flags if isinstance(f, dict)]})
    points = []
    for b in sorted(series):
        s = series[b]
        lat = sorted(s["latencies"])
        points.append({"t": since + b * bucket, "rate_per_min": s["n"] * 60 / bucket, "error_rate": s["errors"] / s["n"],
                       "p50_ms": _quantile(lat, 0.5), "p95_ms": _quantile(lat, 0.95)})
    return {"window": window, "bucket_s": bucket, "requests": len(rows), "errors": sum(s["errors"] for s in series.values()),
            "points": points, "flag_counts": [{"kind": k, "where": w, "action": a, "n": n} for (k, w, a), n in flags.most_common()],
            "flagged": flagged[-50:][::-1], "log_exists": workspace.serving_db.is_file()}


def _requests(db: Path, since: float) -> list[sqlite3.Row]:
    if not db.is_file():
        return []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT id, created_at, route, model, status, latency_ms, flags_json FROM requests WHERE created_at >= ? "
                            "AND route LIKE '/v1/%' ORDER BY created_at", (since,)).fetchall()
    except sqlite3.OperationalError:  # a log with no requests table yet
        return []
    finally:
        conn.close()


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def monitor_reports(workspace: Workspace, limit: int = 20) -> list[dict]:
    """The newest ``tunekit monitor`` reports: drift checks (the test that fired) and live quality with intervals."""
    folder = workspace.monitor
    found = sorted((p for p in folder.glob("*/monitor.json")), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    reports = []
    for path in found[:limit]:
        report = _json(path)
        if report:
            reports.append({"folder": path.parent.name, **report})
    return reports
