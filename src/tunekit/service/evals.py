"""OpenAI's Evals API (``/v1/evals``): evals, their runs and the runs' output items, over tunekit's graders.

An *eval* is a ``data_source_config`` (``custom``: the JSON schema every item must match) and its
``testing_criteria`` (graders, ``tunekit.evaluate.graders``). A *run* grades a data source against
them: ``jsonl`` items (uploaded as a file, or given inline as ``file_content``) that may carry their
own ``sample``, or ``completions``, where a served model answers each item's ``input_messages``
(a template over ``{{item.*}}``, or an ``item_reference`` to messages in the item) and the answer
is ``{{sample.output_text}}``. Each item becomes an *output item* with one result per grader.

Everything is checked when the eval or run is created (400 naming the field; items against the
eval's schema naming the item and field), then the run is queued and graded in a background thread
of the server: ``queued`` -> ``in_progress`` -> ``completed`` | ``failed`` | ``canceled``. A cancel
stops it between items. A grader that cannot grade an item (a missing field, a judge model's
unusable answer, a python grader that crashes or times out) makes that item ``errored``; the run
goes on. ``per_model_usage`` token counts are the model's own when ``complete`` reports them and
otherwise estimates (4 characters a token).

Not supported (400 saying so): ``logs`` / ``stored_completions`` data source configs and the
``responses`` / ``stored_completions`` run sources (tunekit keeps no store of past completions to
select from), image and audio content, ``multi`` graders, and the text-similarity metrics
``meteor`` and ``cosine``. Python graders answer every item with an error unless the server
enables them.

Everything is project-scoped like files: another project's eval, run or output item is 404.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body

from tunekit.errors import Conflict, NotFound, RequestError
from tunekit.evaluate import graders
from tunekit.evaluate.graders import GraderDefinitionError, ItemError
from tunekit.service.db import connect, now

__all__ = ["EvalStore", "router"]

logger = logging.getLogger("tunekit.service.evals")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, name TEXT NOT NULL, metadata TEXT,
    data_source_config TEXT NOT NULL, item_schema TEXT NOT NULL, testing_criteria TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS evals_project ON evals (project, created_at);
CREATE TABLE IF NOT EXISTS eval_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, eval_id TEXT NOT NULL, project TEXT NOT NULL,
    created_at INTEGER NOT NULL, status TEXT NOT NULL, name TEXT NOT NULL, model TEXT NOT NULL, metadata TEXT,
    data_source TEXT NOT NULL, items TEXT NOT NULL, result_counts TEXT NOT NULL, per_testing_criteria_results TEXT NOT NULL,
    per_model_usage TEXT NOT NULL, error TEXT, worker TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS eval_runs_eval ON eval_runs (eval_id, project);
CREATE TABLE IF NOT EXISTS eval_output_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, run_id TEXT NOT NULL, eval_id TEXT NOT NULL,
    project TEXT NOT NULL, created_at INTEGER NOT NULL, datasource_item_id INTEGER NOT NULL, datasource_item TEXT NOT NULL,
    results TEXT NOT NULL, sample TEXT NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS eval_output_items_run ON eval_output_items (run_id, project);
"""

ACTIVE = ("queued", "in_progress")
RUN_STATUSES = ("queued", "in_progress", "completed", "canceled", "failed")
DATA_SOURCE_CONFIGS = ("custom",)
RUN_DATA_SOURCES = ("jsonl", "completions")
RUN_SOURCES = ("file_content", "file_id")
MAX_LIMIT = 100
SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "properties": {
            "message": {"type": "object", "properties": {"role": {"type": "string"}, "content": {"type": "string"}}},
            "finish_reason": {"type": "string"}}}},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
    },
    "required": ["model", "choices", "output_text"],
}

JSONBody = Annotated[dict, Body()]
ReadFile = Callable[[str, str], bytes]
CompleteFn = Callable[[str, str, list[dict], dict], Any]


def project_of(info: Any) -> str:
    """The caller's project: its key's, or ``default`` with auth off (as ``serve.keys.project_of``; not
    imported from there, as a stage must not import the ``serve`` composition root)."""
    return getattr(info, "project", None) or "default"


def _id(prefix: str) -> str:
    """OpenAI's eval ids: ``eval_``, ``evalrun_``, ``outputitem_`` and 32 hex characters."""
    return f"{prefix}_{secrets.token_hex(16)}"


def _bad(message: str, param: str | None, code: str = "invalid_value") -> RequestError:
    return RequestError(message, code, param, http_status=400)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def check_metadata(metadata: Any, param: str = "metadata") -> dict | None:
    """OpenAI's metadata: up to 16 string pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _bad(f"{param}: must be an object of string keys and values", param)
    if len(metadata) > 16:
        raise _bad(f"{param}: {len(metadata)} keys; at most 16", param)
    for key, value in metadata.items():
        if len(key) > 64:
            raise _bad(f"{param}.{key[:20]}...: keys may have at most 64 characters", f"{param}.{key}")
        if not isinstance(value, str) or len(value) > 512:
            raise _bad(f"{param}.{key}: values must be strings of at most 512 characters", f"{param}.{key}")
    return metadata


def _validator(schema: Any, param: str):
    import jsonschema_rs

    if not isinstance(schema, dict):
        raise _bad(f"{param}: must be a JSON schema (an object)", param)
    try:
        return jsonschema_rs.validator_for(schema)
    except (ValueError, jsonschema_rs.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _bad(f"{param}: not a valid JSON schema: {first}", param) from None


def _schema_problem(validator, item: Any) -> str | None:
    """The first way ``item`` fails the schema, as ``item.field.0: message``; None when it matches."""
    for error in validator.iter_errors(item):
        path = ".".join(str(p) for p in ["item", *error.instance_path])
        return f"{path}: {error.message}"
    return None


class EvalStore:
    """Evals, runs and output items in the service's SQLite file; every read and write is scoped
    to a project, and another project's objects are ``NotFound`` like missing ones."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _db(self):
        return connect(self.path, _SCHEMA)

    # ----------------------------------------------------------------------------------- evals

    def create_eval(self, project: str, body: dict) -> dict:
        """A new eval from OpenAI's create body; ``RequestError`` 400 naming the field when invalid."""
        unknown = sorted(set(body) - {"data_source_config", "testing_criteria", "metadata", "name"})
        if unknown:
            raise _bad(f"{unknown[0]}: unknown field; an eval takes data_source_config, testing_criteria, name and metadata",
                       unknown[0], "unknown_parameter")
        config = body.get("data_source_config")
        if not isinstance(config, dict):
            raise _bad("data_source_config: required, an object such as {\"type\": \"custom\", \"item_schema\": {...}}",
                       "data_source_config")
        kind = config.get("type")
        if kind not in DATA_SOURCE_CONFIGS:
            why = " (tunekit keeps no log of past completions to select from)" if kind in ("logs", "stored_completions") else ""
            raise _bad(f"data_source_config.type: {kind!r} is not supported{why}; supported: {', '.join(DATA_SOURCE_CONFIGS)}",
                       "data_source_config.type")
        item_schema = config.get("item_schema")
        _validator(item_schema, "data_source_config.item_schema")
        include_sample = config.get("include_sample_schema", False)
        if not isinstance(include_sample, bool):
            raise _bad("data_source_config.include_sample_schema: must be true or false", "data_source_config.include_sample_schema")
        criteria = graders.validate_all(body.get("testing_criteria"), "testing_criteria")
        name = body.get("name") or ""
        if not isinstance(name, str):
            raise _bad("name: must be a string", "name")
        metadata = check_metadata(body.get("metadata"))
        properties, required = {"item": item_schema}, ["item"]
        if include_sample:
            properties["sample"], required = SAMPLE_SCHEMA, ["item", "sample"]
        stored_config = {"type": "custom", "schema": {"type": "object", "properties": properties, "required": required}}
        eval_id, created = _id("eval"), now()
        with self._db() as conn:
            conn.execute("INSERT INTO evals (id, project, created_at, updated_at, name, metadata, data_source_config, item_schema, "
                         "testing_criteria) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (eval_id, project, created, created, name, json.dumps(metadata), json.dumps(stored_config),
                          json.dumps(item_schema), json.dumps(criteria)))
        return self.get_eval(project, eval_id)

    def _eval_row(self, conn, project: str, eval_id: str):
        row = conn.execute("SELECT * FROM evals WHERE id = ? AND project = ?", (eval_id, project)).fetchone()
        if row is None:
            raise NotFound(f"no eval {eval_id!r} in this project", param="eval_id")
        return row

    def get_eval(self, project: str, eval_id: str) -> dict:
        with self._db() as conn:
            return _eval_json(self._eval_row(conn, project, eval_id))

    def eval_definition(self, project: str, eval_id: str) -> tuple[dict, list[dict]]:
        """The eval's item schema and testing criteria."""
        with self._db() as conn:
            row = self._eval_row(conn, project, eval_id)
        return json.loads(row["item_schema"]), json.loads(row["testing_criteria"])

    def list_evals(self, project: str, after: str | None = None, limit: int = 20, order: str = "asc",
                   order_by: str = "created_at") -> dict:
        if order_by not in ("created_at", "updated_at"):
            raise _bad(f"order_by: {order_by!r} is not one of created_at, updated_at", "order_by")
        with self._db() as conn:
            return _page(conn, "evals", "project = ?", [project], after, limit, order, order_by, _eval_json, "eval")

    def update_eval(self, project: str, eval_id: str, body: dict) -> dict:
        unknown = sorted(set(body) - {"name", "metadata"})
        if unknown:
            raise _bad(f"{unknown[0]}: unknown field; an eval's update takes name and metadata", unknown[0], "unknown_parameter")
        sets, values = [], []
        if body.get("name") is not None:
            if not isinstance(body["name"], str):
                raise _bad("name: must be a string", "name")
            sets.append("name = ?")
            values.append(body["name"])
        if "metadata" in body:
            sets.append("metadata = ?")
            values.append(json.dumps(check_metadata(body["metadata"])))
        with self._db() as conn:
            self._eval_row(conn, project, eval_id)
            if sets:
                conn.execute(f"UPDATE evals SET {', '.join(sets)}, updated_at = ? WHERE id = ? AND project = ?",
                             (*values, now(), eval_id, project))
        return self.get_eval(project, eval_id)

    def delete_eval(self, project: str, eval_id: str) -> dict:
        """Delete the eval, its runs (running ones stop at their next item) and their output items."""
        with self._db() as conn:
            self._eval_row(conn, project, eval_id)
            conn.execute("DELETE FROM eval_output_items WHERE eval_id = ? AND project = ?", (eval_id, project))
            conn.execute("DELETE FROM eval_runs WHERE eval_id = ? AND project = ?", (eval_id, project))
            conn.execute("DELETE FROM evals WHERE id = ? AND project = ?", (eval_id, project))
        return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}

    # ----------------------------------------------------------------------------------- runs

    def create_run(self, project: str, eval_id: str, body: dict, read_file: ReadFile) -> dict:
        """A queued run; its data source and every item (against the eval's schema) checked now."""
        item_schema, criteria = self.eval_definition(project, eval_id)
        unknown = sorted(set(body) - {"data_source", "name", "metadata"})
        if unknown:
            raise _bad(f"{unknown[0]}: unknown field; a run takes data_source, name and metadata", unknown[0], "unknown_parameter")
        source = body.get("data_source")
        if not isinstance(source, dict):
            raise _bad("data_source: required, an object with `type` (jsonl or completions) and `source`", "data_source")
        items = _check_data_source(project, source, read_file)
        validator = _validator(item_schema, "data_source_config.item_schema")
        where = _items_origin(source)
        for index, entry in enumerate(items):
            problem = _schema_problem(validator, entry["item"])
            if problem:
                raise _bad(f"{where(index)}: does not match the eval's item_schema: {problem}", "data_source.source")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise _bad("name: must be a string", "name")
        metadata = check_metadata(body.get("metadata"))
        model = source.get("model") or ""
        run_id, created = _id("evalrun"), now()
        counts = {"total": 0, "passed": 0, "failed": 0, "errored": 0}
        per_criteria = [{"testing_criteria": c["name"], "passed": 0, "failed": 0, "errored": 0} for c in criteria]
        with self._db() as conn:
            self._eval_row(conn, project, eval_id)
            conn.execute("INSERT INTO eval_runs (id, eval_id, project, created_at, status, name, model, metadata, data_source, items, "
                         "result_counts, per_testing_criteria_results, per_model_usage, error, worker) "
                         "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, '[]', NULL, ?)",
                         (run_id, eval_id, project, created, name or model or source["type"], model, json.dumps(metadata),
                          json.dumps(source), json.dumps(items), json.dumps(counts), json.dumps(per_criteria), _worker()))
        return self.get_run(project, eval_id, run_id)

    def _run_row(self, conn, project: str, eval_id: str, run_id: str):
        row = conn.execute("SELECT * FROM eval_runs WHERE id = ? AND eval_id = ? AND project = ?", (run_id, eval_id, project)).fetchone()
        if row is None:
            self._eval_row(conn, project, eval_id)  # "no eval" when that is what is missing
            raise NotFound(f"no run {run_id!r} in eval {eval_id!r}", param="run_id")
        return row

    def get_run(self, project: str, eval_id: str, run_id: str) -> dict:
        with self._db() as conn:
            return _run_json(self._run_row(conn, project, eval_id, run_id))

    def list_runs(self, project: str, eval_id: str, after: str | None = None, limit: int = 20, order: str = "asc",
                  status: str | None = None) -> dict:
        where, params = "eval_id = ? AND project = ?", [eval_id, project]
        if status is not None:
            if status not in RUN_STATUSES:
                raise _bad(f"status: {status!r} is not one of {', '.join(RUN_STATUSES)}", "status")
            where, params = where + " AND status = ?", [*params, status]
        with self._db() as conn:
            self._eval_row(conn, project, eval_id)
            return _page(conn, "eval_runs", where, params, after, limit, order, "created_at", _run_json, "run")

    def cancel_run(self, project: str, eval_id: str, run_id: str) -> dict:
        """Cancel a queued or running run (it stops before its next item); 409 for a finished one."""
        with self._db() as conn:
            row = self._run_row(conn, project, eval_id, run_id)
            changed = conn.execute("UPDATE eval_runs SET status = 'canceled' WHERE id = ? AND status IN ('queued', 'in_progress')",
                                   (run_id,)).rowcount
            if not changed:
                raise Conflict(f"run {run_id} is {row['status']}; only queued or in-progress runs can be canceled", param="run_id")
        return self.get_run(project, eval_id, run_id)

    def delete_run(self, project: str, eval_id: str, run_id: str) -> dict:
        with self._db() as conn:
            self._run_row(conn, project, eval_id, run_id)
            conn.execute("DELETE FROM eval_output_items WHERE run_id = ? AND project = ?", (run_id, project))
            conn.execute("DELETE FROM eval_runs WHERE id = ? AND project = ?", (run_id, project))
        return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}

    # ----------------------------------------------------------------------------------- output items

    def list_output_items(self, project: str, eval_id: str, run_id: str, after: str | None = None, limit: int = 20,
                          order: str = "asc", status: str | None = None) -> dict:
        where, params = "run_id = ? AND eval_id = ? AND project = ?", [run_id, eval_id, project]
        if status is not None:
            if status not in ("pass", "fail"):
                raise _bad(f"status: {status!r} is not one of pass, fail", "status")
            where, params = where + " AND status = ?", [*params, status]
        with self._db() as conn:
            self._run_row(conn, project, eval_id, run_id)
            return _page(conn, "eval_output_items", where, params, after, limit, order, "created_at", _item_json, "output item")

    def get_output_item(self, project: str, eval_id: str, run_id: str, output_item_id: str) -> dict:
        with self._db() as conn:
            row = conn.execute("SELECT * FROM eval_output_items WHERE id = ? AND run_id = ? AND eval_id = ? AND project = ?",
                               (output_item_id, run_id, eval_id, project)).fetchone()
            if row is None:
                self._run_row(conn, project, eval_id, run_id)
                raise NotFound(f"no output item {output_item_id!r} in run {run_id!r}", param="output_item_id")
        return _item_json(row)

    # ----------------------------------------------------------------------------------- the runner's side

    def start_run(self, run_id: str) -> dict | None:
        """queued -> in_progress; the run's project, eval, data source and items, or None when it
        was canceled or deleted meanwhile."""
        with self._db() as conn:
            if not conn.execute("UPDATE eval_runs SET status = 'in_progress', worker = ? WHERE id = ? AND status = 'queued'",
                                (_worker(), run_id)).rowcount:
                return None
            row = conn.execute("SELECT r.project, r.eval_id, r.data_source, r.items, e.testing_criteria FROM eval_runs r "
                               "JOIN evals e ON e.id = r.eval_id WHERE r.id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return {"project": row["project"], "eval_id": row["eval_id"], "data_source": json.loads(row["data_source"]),
                "items": json.loads(row["items"]), "testing_criteria": json.loads(row["testing_criteria"])}

    def add_output_item(self, run_id: str, eval_id: str, project: str, index: int, entry: dict, results: list[dict],
                        sample: dict, status: str, counts: dict, per_criteria: list[dict], usage: list[dict]) -> bool:
        """Record one graded item and the run's counts so far; False (nothing written) when the run
        is no longer in progress (canceled or deleted)."""
        with self._db() as conn:
            if not conn.execute("UPDATE eval_runs SET result_counts = ?, per_testing_criteria_results = ?, per_model_usage = ? "
                                "WHERE id = ? AND status = 'in_progress'",
                                (json.dumps(counts), json.dumps(per_criteria), json.dumps(usage), run_id)).rowcount:
                return False
            conn.execute("INSERT INTO eval_output_items (id, run_id, eval_id, project, created_at, datasource_item_id, datasource_item, "
                         "results, sample, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (_id("outputitem"), run_id, eval_id, project, now(), index, json.dumps(entry["item"]), json.dumps(results),
                          json.dumps(sample), status))
        return True

    def is_active(self, run_id: str) -> bool:
        with self._db() as conn:
            row = conn.execute("SELECT status FROM eval_runs WHERE id = ?", (run_id,)).fetchone()
        return row is not None and row["status"] == "in_progress"

    def finish_run(self, run_id: str, error: dict | None = None) -> None:
        """in_progress -> completed (or failed with ``error``); a canceled run stays canceled."""
        with self._db() as conn:
            conn.execute("UPDATE eval_runs SET status = ?, error = ? WHERE id = ? AND status = 'in_progress'",
                         ("failed" if error else "completed", json.dumps(error) if error else None, run_id))

    def fail_interrupted(self) -> int:
        """Runs left queued or in progress by a server process that is gone: failed, saying so. Returns how many."""
        host, me = socket.gethostname(), os.getpid()
        with self._db() as conn:
            rows = conn.execute("SELECT id, worker FROM eval_runs WHERE status IN ('queued', 'in_progress')").fetchall()
            dead = [row["id"] for row in rows if _gone(row["worker"], host, me)]
            error = json.dumps({"code": "server_restarted", "message": "the server stopped while this run was queued or in progress; "
                                "create the run again"})
            for run_id in dead:
                conn.execute("UPDATE eval_runs SET status = 'failed', error = ? WHERE id = ? AND status IN ('queued', 'in_progress')",
                             (error, run_id))
        return len(dead)


def _gone(worker: str, host: str, me: int) -> bool:
    wh, _, pid = worker.rpartition(":")
    if wh != host or not pid.isdigit():
        return False  # another machine's run: not ours to judge
    if int(pid) == me:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _page(conn, table: str, where: str, params: list, after: str | None, limit: int, order: str, key: str, to_json,
          what: str) -> dict:
    """OpenAI's cursor page: ``data``, ``first_id``, ``last_id``, ``has_more``; ``after`` is the last id seen."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"limit: must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}", "limit")
    if order not in ("asc", "desc"):
        raise _bad(f"order: {order!r} is not one of asc, desc", "order")
    cmp = ">" if order == "asc" else "<"
    if after:
        row = conn.execute(f"SELECT {key}, seq FROM {table} WHERE id = ? AND {where}", (after, *params)).fetchone()
        if row is None:
            raise _bad(f"after: no {what} {after!r} here to continue after", "after")
        where, params = f"{where} AND ({key}, seq) {cmp} (?, ?)", [*params, row[key], row["seq"]]
    rows = conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY {key} {order}, seq {order} LIMIT ?",
                        (*params, limit + 1)).fetchall()
    data = [to_json(row) for row in rows[:limit]]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit}


def _eval_json(row) -> dict:
    return {"object": "eval", "id": row["id"], "created_at": row["created_at"], "name": row["name"],
            "metadata": _loads(row["metadata"]), "data_source_config": json.loads(row["data_source_config"]),
            "testing_criteria": json.loads(row["testing_criteria"])}


def _run_json(row) -> dict:
    return {"object": "eval.run", "id": row["id"], "eval_id": row["eval_id"], "created_at": row["created_at"],
            "status": row["status"], "name": row["name"], "model": row["model"], "metadata": _loads(row["metadata"]),
            "data_source": json.loads(row["data_source"]), "result_counts": json.loads(row["result_counts"]),
            "per_testing_criteria_results": json.loads(row["per_testing_criteria_results"]),
            "per_model_usage": json.loads(row["per_model_usage"]), "error": _loads(row["error"]),
            "report_url": f"/v1/evals/{row['eval_id']}/runs/{row['id']}"}


def _item_json(row) -> dict:
    return {"object": "eval.run.output_item", "id": row["id"], "run_id": row["run_id"], "eval_id": row["eval_id"],
            "created_at": row["created_at"], "status": row["status"], "datasource_item_id": row["datasource_item_id"],
            "datasource_item": json.loads(row["datasource_item"]), "results": json.loads(row["results"]),
            "sample": json.loads(row["sample"])}


# --------------------------------------------------------------------------------------- data sources

def _check_data_source(project: str, ds: dict, read_file: ReadFile) -> list[dict]:
    """The run's items (``[{"item": {...}, "sample": {...}?}]``), its data source checked; 400 naming the field."""
    kind = ds.get("type")
    if kind not in RUN_DATA_SOURCES:
        why = " (tunekit keeps no store of past responses to select from)" if kind == "responses" else ""
        raise _bad(f"data_source.type: {kind!r} is not supported{why}; supported: {', '.join(RUN_DATA_SOURCES)}", "data_source.type")
    allowed = {"type", "source"} | ({"input_messages", "model", "sampling_params"} if kind == "completions" else set())
    unknown = sorted(set(ds) - allowed)
    if unknown:
        raise _bad(f"data_source.{unknown[0]}: unknown field for a {kind} data source; it takes {', '.join(sorted(allowed))}",
                   f"data_source.{unknown[0]}", "unknown_parameter")
    if kind == "completions":
        if not isinstance(ds.get("model"), str) or not ds["model"]:
            raise _bad("data_source.model: required for a completions data source: the served model that answers each item",
                       "data_source.model")
        params = ds.get("sampling_params")
        if params is not None and not isinstance(params, dict):
            raise _bad("data_source.sampling_params: must be an object", "data_source.sampling_params")
        _check_input_messages(ds.get("input_messages"))
    source = ds.get("source")
    if not isinstance(source, dict):
        raise _bad("data_source.source: required, {\"type\": \"file_content\", \"content\": [...]} or "
                   "{\"type\": \"file_id\", \"id\": \"file-...\"}", "data_source.source")
    stype = source.get("type")
    if stype not in RUN_SOURCES:
        why = " (tunekit keeps no store of past completions to select from)" if stype in ("stored_completions", "responses") else ""
        raise _bad(f"data_source.source.type: {stype!r} is not supported{why}; supported: {', '.join(RUN_SOURCES)}",
                   "data_source.source.type")
    if stype == "file_content":
        content = source.get("content")
        if not isinstance(content, list):
            raise _bad("data_source.source.content: must be a list of {\"item\": {...}}", "data_source.source.content")
        items = [_entry(row, f"data_source.source.content[{i}]") for i, row in enumerate(content)]
    else:
        file_id = source.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise _bad("data_source.source.id: must be the id of an uploaded JSONL file", "data_source.source.id")
        items = _read_jsonl(read_file(project, file_id), file_id)
    if not items:
        raise _bad("data_source.source: holds no items", "data_source.source")
    return items


def _check_input_messages(spec: Any) -> None:
    where = "data_source.input_messages"
    if not isinstance(spec, dict):
        raise _bad(f"{where}: required for a completions data source: {{\"type\": \"template\", \"template\": [...]}} or "
                   "{\"type\": \"item_reference\", \"item_reference\": \"item.messages\"}", where)
    if spec.get("type") == "template":
        template = spec.get("template")
        if not isinstance(template, list) or not template:
            raise _bad(f"{where}.template: must be a non-empty list of messages", f"{where}.template")
        for i, message in enumerate(template):
            graders.check_message(message, f"{where}.template[{i}]")
    elif spec.get("type") == "item_reference":
        ref = spec.get("item_reference")
        if not isinstance(ref, str) or not ref.startswith("item."):
            raise _bad(f"{where}.item_reference: must name a field of the item holding its messages, such as item.messages",
                       f"{where}.item_reference")
    else:
        raise _bad(f"{where}.type: {spec.get('type')!r} is not one of template, item_reference", f"{where}.type")


def _entry(row: Any, where: str) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
        raise _bad(f"{where}: must be an object {{\"item\": {{...}}}} (optionally with \"sample\": {{...}})", where)
    unknown = sorted(set(row) - {"item", "sample"})
    if unknown:
        raise _bad(f"{where}.{unknown[0]}: unknown field; a row has item and (optionally) sample", where)
    if row.get("sample") is not None and not isinstance(row["sample"], dict):
        raise _bad(f"{where}.sample: must be an object", where)
    return {"item": row["item"], **({"sample": row["sample"]} if row.get("sample") is not None else {})}


def _read_jsonl(data: bytes, file_id: str) -> list[dict]:
    items = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"file {file_id}: not UTF-8 text ({exc})", "data_source.source.id") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise _bad(f"file {file_id} line {n}: not JSON ({exc})", "data_source.source.id") from None
        try:
            items.append(_entry(row, f"file {file_id} line {n}"))
        except RequestError as exc:
            raise _bad(str(exc), "data_source.source.id") from None
    return items


def _items_origin(ds: dict) -> Callable[[int], str]:
    source = ds.get("source") or {}
    if source.get("type") == "file_id":
        return lambda i: f"file {source['id']} item {i}"
    return lambda i: f"data_source.source.content[{i}]"


# --------------------------------------------------------------------------------------- running

class _Runner:
    """Daemon threads that execute queued runs, one item at a time."""

    def __init__(self, store: EvalStore, complete: CompleteFn, allow_python: bool, workers: int):
        self.store, self.complete, self.allow_python = store, complete, allow_python
        self.queue: queue.Queue[str] = queue.Queue()
        self.threads = [threading.Thread(target=self._loop, name=f"tunekit-evals-{i}", daemon=True) for i in range(workers)]
        self._started = False
        self._lock = threading.Lock()

    def submit(self, run_id: str) -> None:
        with self._lock:
            if not self._started:
                for thread in self.threads:
                    thread.start()
                self._started = True
        self.queue.put(run_id)

    def _loop(self) -> None:
        while True:
            run_id = self.queue.get()
            try:
                execute(self.store, run_id, self.complete, self.allow_python)
            except Exception:  # execute records failures itself; this is a last resort
                logger.exception("eval run %s crashed", run_id)


def execute(store: EvalStore, run_id: str, complete: CompleteFn, allow_python: bool = False) -> None:
    """Run one queued run to its end (or until it is canceled or deleted)."""
    run = store.start_run(run_id)
    if run is None:
        return
    try:
        _execute(store, run_id, run, complete, allow_python)
    except Exception as exc:
        logger.exception("eval run %s failed", run_id)
        code = "model_not_found" if isinstance(exc, NotFound) else "run_error"
        store.finish_run(run_id, {"code": code, "message": str(exc) or type(exc).__name__})


def _execute(store: EvalStore, run_id: str, run: dict, complete: CompleteFn, allow_python: bool) -> None:
    project, ds, criteria = run["project"], run["data_source"], run["testing_criteria"]

    def judge(model: str, messages: list[dict], params: dict):
        return complete(project, model, messages, params)

    counts = {"total": 0, "passed": 0, "failed": 0, "errored": 0}
    per_criteria = [{"testing_criteria": c["name"], "passed": 0, "failed": 0, "errored": 0} for c in criteria]
    usage: dict[str, dict] = {}

    def use(u: graders.Usage) -> None:
        entry = usage.setdefault(u.model, {"model_name": u.model, "invocation_count": 0, "prompt_tokens": 0,
                                           "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0})
        entry["invocation_count"] += 1
        entry["prompt_tokens"] += u.prompt_tokens
        entry["completion_tokens"] += u.completion_tokens
        entry["total_tokens"] += u.prompt_tokens + u.completion_tokens

    for index, entry in enumerate(run["items"]):
        if not store.is_active(run_id):
            return
        sample, sample_ns = _sample(ds, entry, judge, use)
        results = [graders.grade(c, entry["item"], sample_ns, judge, allow_python) for c in criteria]
        for result, tally in zip(results, per_criteria):
            tally["errored" if result.error else "passed" if result.passed else "failed"] += 1
            for u in result.usage:
                use(u)
        errored = sample["error"] is not None or any(r.error for r in results)
        passed = not errored and all(r.passed for r in results)
        counts["total"] += 1
        counts["errored" if errored else "passed" if passed else "failed"] += 1
        if not store.add_output_item(run_id, run["eval_id"], project, index, entry, [r.to_json() for r in results], sample,
                                     "pass" if passed else "fail", counts, per_criteria, list(usage.values())):
            return
    store.finish_run(run_id)


def _sample(ds: dict, entry: dict, judge, use) -> tuple[dict, dict | None]:
    """The output item's ``sample`` and the ``{{sample.*}}`` namespace for the graders: the model's
    answer for a completions source, the row's own ``sample`` (if any) for jsonl."""
    params = ds.get("sampling_params") or {}
    sample = {"input": [], "output": [], "model": ds.get("model") or "", "error": None, "finish_reason": None,
              "max_completion_tokens": params.get("max_completion_tokens"), "seed": params.get("seed"),
              "temperature": params.get("temperature"), "top_p": params.get("top_p"),
              "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}}
    if ds["type"] != "completions":
        given = entry.get("sample")
        if given is not None and isinstance(given.get("output_text"), str):
            sample["output"] = [{"role": "assistant", "content": given["output_text"]}]
        return sample, given
    try:
        messages = _input_messages(ds["input_messages"], entry["item"])
        sample["input"] = messages
        answer, usage = graders.call_model(judge, ds["model"], messages, dict(params))
    except NotFound:
        raise  # an unknown model fails the whole run, not each item
    except (ItemError, GraderDefinitionError) as exc:
        sample["error"] = {"code": "invalid_item", "message": str(exc)}
        return sample, None
    except Exception as exc:  # noqa: BLE001 - the model failed on this item: the item is errored, the run goes on
        sample["error"] = {"code": "sample_error", "message": f"{type(exc).__name__}: {exc}"}
        return sample, None
    use(usage)
    sample["output"] = [{"role": "assistant", "content": answer}]
    sample["finish_reason"] = "stop"
    sample["usage"] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                       "total_tokens": usage.prompt_tokens + usage.completion_tokens, "cached_tokens": 0}
    try:
        output_json = json.loads(answer)
    except ValueError:
        output_json = None
    namespace = {"output_text": answer, "output_json": output_json if isinstance(output_json, dict) else None,
                 "model": ds["model"], "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                    "finish_reason": "stop"}]}
    return sample, namespace


def _input_messages(spec: dict, item: dict) -> list[dict]:
    if spec["type"] == "template":
        return graders.render_messages(spec["template"], item, None)
    messages = graders.lookup(spec["item_reference"], {"item": item})
    if not isinstance(messages, list) or not messages:
        raise ItemError(f"{spec['item_reference']}: must be a non-empty list of messages")
    for i, message in enumerate(messages):
        graders.check_message(message, f"{spec['item_reference']}[{i}]")
    return graders.render_messages(messages, item, None)


# --------------------------------------------------------------------------------------- routes

def router(store: EvalStore, require, read_file: ReadFile, complete: CompleteFn, allow_python: bool = False,
           workers: int = 2) -> APIRouter:
    """OpenAI's ``/v1/evals`` routes over ``store``; runs execute in ``workers`` background threads.

    ``require(scope)`` gives the route dependency whose value is the caller's ``KeyInfo`` (or None
    with auth off); ``read_file(project, file_id) -> bytes`` reads an uploaded JSONL file (raising
    ``NotFound``); ``complete(project, model, messages, params)`` answers chat messages with a
    served model (raising ``NotFound`` for an unknown one); ``allow_python`` enables python graders.
    """
    runner = _Runner(store, complete, allow_python, workers)
    try:
        store.fail_interrupted()
    except Exception:  # a store that cannot be read now fails on its first request, with the error
        logger.exception("could not check %s for interrupted eval runs", store.path)
    api = APIRouter(tags=["evals"])
    auth = require("fine-tune")

    @api.post("/v1/evals")
    def create_eval(body: JSONBody, info=auth):
        return store.create_eval(project_of(info), body)

    @api.get("/v1/evals")
    def list_evals(after: str | None = None, limit: int = 20, order: str = "asc", order_by: str = "created_at", info=auth):
        return store.list_evals(project_of(info), after, limit, order, order_by)

    @api.get("/v1/evals/{eval_id}")
    def get_eval(eval_id: str, info=auth):
        return store.get_eval(project_of(info), eval_id)

    @api.post("/v1/evals/{eval_id}")
    def update_eval(eval_id: str, body: JSONBody, info=auth):
        return store.update_eval(project_of(info), eval_id, body)

    @api.delete("/v1/evals/{eval_id}")
    def delete_eval(eval_id: str, info=auth):
        return store.delete_eval(project_of(info), eval_id)

    @api.post("/v1/evals/{eval_id}/runs")
    def create_run(eval_id: str, body: JSONBody, info=auth):
        run = store.create_run(project_of(info), eval_id, body, read_file)
        runner.submit(run["id"])
        return run

    @api.get("/v1/evals/{eval_id}/runs")
    def list_runs(eval_id: str, after: str | None = None, limit: int = 20, order: str = "asc", status: str | None = None,
                  info=auth):
        return store.list_runs(project_of(info), eval_id, after, limit, order, status)

    @api.get("/v1/evals/{eval_id}/runs/{run_id}")
    def get_run(eval_id: str, run_id: str, info=auth):
        return store.get_run(project_of(info), eval_id, run_id)

    # the API reference cancels with POST .../runs/{run_id}; the Python client posts to .../cancel
    @api.post("/v1/evals/{eval_id}/runs/{run_id}")
    @api.post("/v1/evals/{eval_id}/runs/{run_id}/cancel")
    def cancel_run(eval_id: str, run_id: str, info=auth):
        return store.cancel_run(project_of(info), eval_id, run_id)

    @api.delete("/v1/evals/{eval_id}/runs/{run_id}")
    def delete_run(eval_id: str, run_id: str, info=auth):
        return store.delete_run(project_of(info), eval_id, run_id)

    @api.get("/v1/evals/{eval_id}/runs/{run_id}/output_items")
    def list_output_items(eval_id: str, run_id: str, after: str | None = None, limit: int = 20, order: str = "asc",
                          status: str | None = None, info=auth):
        return store.list_output_items(project_of(info), eval_id, run_id, after, limit, order, status)

    @api.get("/v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
    def get_output_item(eval_id: str, run_id: str, output_item_id: str, info=auth):
        return store.get_output_item(project_of(info), eval_id, run_id, output_item_id)

    return api
