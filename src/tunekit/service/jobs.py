"""Fine-tuning jobs: the job store, OpenAI's job, event and checkpoint objects, and job creation.

A job is a row in ``service.db`` (``jobs``), its events and checkpoints rows beside it; the worker
that runs it (``runner``) writes them, the routes read them, so a job survives a server restart and
a worker's ``kill -9``. Status moves ``validating_files`` -> ``queued`` -> ``running`` ->
``succeeded`` | ``failed`` | ``cancelled``, with ``paused`` on request; ``heartbeat`` is when the
running worker last said it is alive, so a job whose worker died is found and resumed
(``recover``) instead of staying ``running`` forever.

Hyperparameters follow OpenAI's: ``n_epochs``, ``batch_size``, ``learning_rate_multiplier`` (times
the method's default learning rate), each a number or ``"auto"``; the job object shows the numbers
the run used once it has started.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from tunekit.artifacts import Workspace
from tunekit.errors import Conflict, NotFound, ServingError
from tunekit.service.db import connect, new_id, now

__all__ = ["ACTIVE", "FINISHED", "HYPERPARAMETERS", "JobStore", "JobInvalid", "ft_model_id", "resolve_hyperparameters"]

ACTIVE = ("validating_files", "queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
AUTO_EPOCHS, AUTO_BATCH, MAX_EPOCHS, MAX_BATCH = 3, 8, 50, 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    project          TEXT NOT NULL,
    status           TEXT NOT NULL,
    model            TEXT NOT NULL,            -- the catalogue's base name
    training_file    TEXT NOT NULL,
    validation_file  TEXT,
    hyperparameters  TEXT NOT NULL,            -- JSON, as sent ("auto" or numbers), resolved once running
    method           TEXT NOT NULL,            -- JSON: {"type": "supervised", ...}
    suffix           TEXT,
    seed             INTEGER NOT NULL,
    metadata         TEXT,                     -- JSON or NULL
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    fine_tuned_model TEXT,
    trained_tokens   INTEGER,
    error            TEXT,                     -- JSON {code, message, param} or NULL
    result_files     TEXT NOT NULL DEFAULT '[]',
    requested        TEXT,                     -- 'cancel' or 'pause', set by the routes, read by the runner
    heartbeat        REAL,                     -- Unix seconds of the running worker's last sign of life
    attempts         INTEGER NOT NULL DEFAULT 0,
    estimated_finish INTEGER,
    registered       TEXT                      -- JSON: registry name, version, gate decision
);
CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project, created_at);
CREATE TABLE IF NOT EXISTS job_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL,
    type       TEXT NOT NULL,
    data       TEXT
);
CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id, seq);
CREATE TABLE IF NOT EXISTS job_checkpoints (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    step_number INTEGER NOT NULL,
    metrics     TEXT NOT NULL
);
"""


class JobInvalid(ServingError):
    """400: a job that cannot be created as sent (a parameter out of range, a file of the wrong kind)."""

    http_status, code = 400, "invalid_request"


@dataclass(frozen=True)
class Job:
    """A job row; ``to_openai`` is the object the API returns."""

    row: dict

    def __getattr__(self, name: str) -> Any:
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_openai(self) -> dict:
        method = json.loads(self.row["method"])
        hyper = json.loads(self.row["hyperparameters"])
        return {
            "id": self.id, "object": "fine_tuning.job", "created_at": self.created_at, "finished_at": self.finished_at,
            "model": self.model, "organization_id": self.project, "status": self.status,
            "fine_tuned_model": self.fine_tuned_model, "trained_tokens": self.trained_tokens,
            "training_file": self.training_file, "validation_file": self.validation_file,
            "hyperparameters": {k: hyper[k] for k in HYPERPARAMETERS["supervised"]},
            "method": {"type": method["type"], method["type"]: {"hyperparameters": hyper}},
            "result_files": json.loads(self.row["result_files"]), "seed": self.seed, "user_provided_suffix": self.suffix,
            "error": json.loads(self.row["error"]) if self.row["error"] else None,
            "metadata": json.loads(self.row["metadata"]) if self.row["metadata"] else None,
            "estimated_finish": self.estimated_finish, "integrations": [],
        }


def ft_model_id(base: str, project: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's form, ``ft:BASE:ORG:SUFFIX:ID`` (``ft:smollm2:default:support-bot:1a2b3c4d``)."""
    return f"ft:{base}:{project}:{suffix or ''}:{job_id.removeprefix('ftjob-')[:8]}"


HYPERPARAMETERS = {"supervised": ("n_epochs", "batch_size", "learning_rate_multiplier"),
                   "dpo": ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")}


def resolve_hyperparameters(sent: dict, examples: int, method: str = "supervised") -> dict:
    """Numbers for every ``"auto"`` (3 epochs; batch 8, or fewer for a small file; DPO's beta 0.1) after range checks."""
    out = {}
    ranges = {"n_epochs": (AUTO_EPOCHS, 1, MAX_EPOCHS, int), "batch_size": (min(AUTO_BATCH, max(1, examples // 4)), 1, MAX_BATCH, int),
              "learning_rate_multiplier": (1.0, 1e-3, 100.0, float), "beta": (0.1, 1e-3, 10.0, float)}
    unknown = sorted(set(sent) - set(HYPERPARAMETERS[method]))
    if unknown:
        raise JobInvalid(f"hyperparameters.{unknown[0]}: not a hyperparameter of `{method}` fine-tuning; it takes "
                         f"{', '.join(HYPERPARAMETERS[method])}", param=f"hyperparameters.{unknown[0]}")
    for name in HYPERPARAMETERS[method]:
        auto, low, high, kind = ranges[name]
        value = sent.get(name, "auto")
        if value == "auto" or value is None:
            value = auto
        elif isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise JobInvalid(f"hyperparameters.{name}: {value!r} is not {'an integer' if kind is int else 'a number'} or \"auto\"",
                             param=f"hyperparameters.{name}")
        if not low <= value <= high:
            raise JobInvalid(f"hyperparameters.{name}: {value} is outside {low}..{high}", param=f"hyperparameters.{name}")
        out[name] = kind(value)
    return out


class JobStore:
    """Jobs, their events and checkpoints in ``service.db``; every read is scoped to a project."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.service_db

    def _conn(self):
        return connect(self.db, _SCHEMA)

    # --- creation and reads (the routes) ---

    def create(self, project: str, *, model: str, training_file: str, validation_file: str | None, hyperparameters: dict,
               method: dict, suffix: str | None, seed: int | None, metadata: dict | None) -> Job:
        job_id = new_id("ftjob")
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO jobs (id, project, status, model, training_file, validation_file, hyperparameters, method, suffix, seed, "
                "metadata, created_at) VALUES (?, ?, 'validating_files', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, project, model, training_file, validation_file, json.dumps(hyperparameters), json.dumps(method), suffix,
                 seed if seed is not None else int.from_bytes(bytes.fromhex(job_id[-8:]), "big") % 2**31,
                 json.dumps(metadata) if metadata else None, now()))
        return self.get(project, job_id)

    def get(self, project: str | None, job_id: str) -> Job:
        """The job; ``NotFound`` when missing or another project's (``project=None``: the worker, any project)."""
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (project is not None and row["project"] != project):
            raise NotFound(f"no fine-tuning job {job_id!r} in this project; list them with GET /v1/fine_tuning/jobs", param="fine_tuning_job_id")
        return Job(dict(row))

    def list(self, project: str, after: str | None, limit: int, metadata: dict | None = None) -> tuple[list[Job], bool]:
        """Newest first, after the job ``after`` (exclusive); ``metadata`` filters on exact key/value pairs."""
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute("SELECT * FROM jobs WHERE project = ? ORDER BY created_at DESC, rowid DESC", (project,))]
        if metadata:
            rows = [r for r in rows if all((json.loads(r["metadata"] or "{}")).get(k) == v for k, v in metadata.items())]
        if after is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        return [Job(r) for r in rows[:limit]], len(rows) > limit

    def by_model(self, project: str, model: str) -> Job:
        """The succeeded job whose fine-tuned model is ``model``, in ``project``."""
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE fine_tuned_model = ? AND project = ? AND status = 'succeeded'",
                               (model, project)).fetchone()
        if row is None:
            raise NotFound(f"model: {model!r} is not a fine-tuned model of this project; GET /v1/models lists them", param="model")
        return Job(dict(row))

    def models(self, project: str) -> list[Job]:
        with self._conn() as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE project = ? AND status = 'succeeded' ORDER BY finished_at", (project,)).fetchall()
        return [Job(dict(r)) for r in rows]

    def events(self, project: str, job_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        """Newest first, as OpenAI lists them; ``after`` is an event id (the next page goes further back)."""
        self.get(project, job_id)
        with self._conn() as conn:
            start = None
            if after is not None:
                found = conn.execute("SELECT seq FROM job_events WHERE id = ? AND job_id = ?", (after, job_id)).fetchone()
                start = found["seq"] if found else 0
            query = "SELECT * FROM job_events WHERE job_id = ?" + (" AND seq < ?" if start is not None else "") + " ORDER BY seq DESC LIMIT ?"
            params = (job_id, start, limit + 1) if start is not None else (job_id, limit + 1)
            rows = conn.execute(query, params).fetchall()
        events = [{"id": r["id"], "object": "fine_tuning.job.event", "created_at": r["created_at"], "level": r["level"],
                   "message": r["message"], "type": r["type"], "data": json.loads(r["data"]) if r["data"] else {}} for r in rows[:limit]]
        return events, len(rows) > limit

    def checkpoints(self, project: str, job_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        job = self.get(project, job_id)
        with self._conn() as conn:
            rows = [dict(r) for r in conn.execute("SELECT * FROM job_checkpoints WHERE job_id = ? ORDER BY seq DESC", (job_id,))]
        if after is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        model = job.fine_tuned_model or ft_model_id(job.model, job.project, job.suffix, job.id)
        data = [{"id": r["id"], "object": "fine_tuning.job.checkpoint", "created_at": r["created_at"], "fine_tuning_job_id": job_id,
                 "step_number": r["step_number"], "metrics": json.loads(r["metrics"]),
                 "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{r['step_number']}"} for r in rows[:limit]]
        return data, len(rows) > limit

    # --- state changes ---

    def request(self, project: str, job_id: str, what: str) -> Job:
        """Ask the running worker to ``cancel`` or ``pause``; a job not yet running stops at once."""
        job = self.get(project, job_id)
        allowed = {"cancel": ("validating_files", "queued", "running", "paused"), "pause": ("queued", "running")}[what]
        if job.status not in allowed:
            raise Conflict(f"job {job_id} is {job.status}; only a job that is {' or '.join(allowed)} can be {what}led" if what == "cancel"
                           else f"job {job_id} is {job.status}; only a queued or running job can be paused")
        with self._conn() as conn:
            if job.status == "running":
                conn.execute("UPDATE jobs SET requested = ? WHERE id = ?", (what, job_id))
            else:  # nobody is running it: the queued task will find it cancelled (or paused) and skip it
                conn.execute("UPDATE jobs SET status = ?, requested = NULL, finished_at = ? WHERE id = ?",
                             ("cancelled" if what == "cancel" else "paused", now() if what == "cancel" else None, job_id))
        self.event(job_id, f"{'Cancellation' if what == 'cancel' else 'Pause'} requested")
        return self.get(project, job_id)

    def set(self, job_id: str, **fields) -> None:
        """Update columns of a job (JSON-encodes dicts and lists)."""
        encoded = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in fields.items()}
        with self._conn() as conn:
            conn.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in encoded)} WHERE id = ?", (*encoded.values(), job_id))

    def claim(self, job_id: str) -> Job | None:
        """Move a queued job to ``running`` for this worker; None when it is not queued (cancelled, paused, taken)."""
        import time

        with self._conn() as conn:
            changed = conn.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, heartbeat = ?, requested = NULL "
                                   "WHERE id = ? AND status = 'queued'", (time.time(), job_id)).rowcount
        return self.get(None, job_id) if changed else None

    def stale(self, older_than_s: float) -> list[Job]:
        """Running jobs whose worker has not said it is alive for ``older_than_s`` seconds (it died)."""
        import time

        with self._conn() as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE status = 'running' AND (heartbeat IS NULL OR heartbeat < ?)",
                                (time.time() - older_than_s,)).fetchall()
        return [Job(dict(r)) for r in rows]

    def requeue(self, job_id: str, was: str) -> bool:
        """Back to ``queued`` if it is still ``was`` (a compare-and-set, so two recovering workers cannot both take it)."""
        with self._conn() as conn:
            return conn.execute("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = ?", (job_id, was)).rowcount > 0

    def event(self, job_id: str, message: str, level: str = "info", type: str = "message", data: dict | None = None) -> None:
        try:
            with self._conn() as conn:
                conn.execute("INSERT INTO job_events (id, job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (new_id("ftevent"), job_id, now(), level, message, type, json.dumps(data) if data else None))
        except sqlite3.OperationalError:  # a locked database must not fail the job; the event is lost, the job's state is not
            pass

    def checkpoint(self, job_id: str, step: int, metrics: dict) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO job_checkpoints (id, job_id, created_at, step_number, metrics) VALUES (?, ?, ?, ?, ?)",
                         (new_id("ftckpt"), job_id, now(), step, json.dumps(metrics)))
