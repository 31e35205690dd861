"""The request log: every request and response, with latency, model version and flags, and the
feedback users give on them, in ``serving.db`` (SQLite in WAL mode) in the workspace.

    log = RequestLog(workspace / "serving.db")
    log.log({"id": request_id, "route": "/v1/classify", "model": "intent", "version": "3", "status": 200,
             "latency_ms": 12.5, "request": body, "response": answer, "flags": []})
    log.add_feedback(request_id, rating=1, label="refund", answer=None, comment=None, key_id=None)
    log.close()  # on shutdown: drains the queue, stops the writer

Writes never block the event loop: ``log`` turns the record into a row (JSON, PII redacted) and puts
it on a queue; one writer thread takes everything queued, inserts it in one transaction and
commits, so under load many records share a commit and no request waits for the disk.

Durability, "nothing acknowledged is lost": the server calls ``log`` before it returns a response
and ``close()`` on shutdown, and ``close()`` commits every queued record before it returns. A crash
that skips ``close()`` (``kill -9``, power loss) loses at most the records queued but not yet
committed: those logged during the writer's last commit, a few milliseconds' worth. Whoever wants
no loss even then passes ``durable=True``: ``log`` then returns only once its record is committed
with ``synchronous=FULL`` (concurrent callers still share a commit); it waits on the disk, so the
server calls it off the event loop.

Requests and responses are PII-redacted by default (``redact=True``) with ``tunekit.pii``, the
detectors the guardrails use: e-mail addresses, phone numbers, card numbers (Luhn-checked), IBANs,
US SSNs and IP addresses in any string of the request or response, and in a feedback's label,
answer and comment, become ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[SSN]``, ``[IP]``
before they reach the disk.

The schema has a version (table ``schema_version``); ``MIGRATIONS`` holds the SQL that takes a
database from one version to the next, so later stages (monitoring) can add columns and tables to
databases written by older servers.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Self

from tunekit import pii
from tunekit.errors import FeedbackError, RequestLogDown, TunekitError

logger = logging.getLogger("tunekit.serve")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    route TEXT,
    model TEXT,
    version TEXT,
    adapter TEXT,
    status INTEGER,
    latency_ms REAL,
    key_id TEXT,
    request_json TEXT,
    response_json TEXT,
    flags_json TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS requests_created_at ON requests (created_at);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    rating INTEGER,
    label TEXT,
    answer TEXT,
    comment TEXT,
    key_id TEXT,
    input_index INTEGER
);
CREATE INDEX IF NOT EXISTS feedback_created_at ON feedback (created_at);
CREATE INDEX IF NOT EXISTS feedback_request_id ON feedback (request_id);
"""
# version N -> the SQL that takes a version N-1 database to version N
MIGRATIONS: dict[int, str] = {
    2: "ALTER TABLE feedback ADD COLUMN input_index INTEGER",  # which input of a multi-input request the feedback is about
}

COLUMNS = ("id", "created_at", "route", "model", "version", "adapter", "status", "latency_ms", "key_id",
           "request_json", "response_json", "flags_json", "prompt_tokens", "completion_tokens")
JSON_FIELDS = {"request": "request_json", "response": "response_json", "flags": "flags_json"}
RECORD_FIELDS = set(COLUMNS) - set(JSON_FIELDS.values()) | set(JSON_FIELDS)
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
RATINGS = range(-1, 6)  # -1 (thumbs down) .. 5 (stars); 1 is a thumbs up
MAX_BATCH = 1000  # rows per transaction at most


class RequestLog:
    """The request and feedback log in the SQLite file ``path``, written by a background thread.

    The writer survives any row: a row SQLite refuses is logged (server log, with its id and the
    reason) and counted in ``dropped``; a string that cannot be stored as UTF-8 (a lone surrogate)
    is stored escaped. Should the thread stop all the same, ``check()`` raises ``RequestLogDown``.
    """

    def __init__(self, path: Path, *, durable: bool = False, redact: bool = True):
        self.path = Path(path)
        self.durable = durable
        self.redact = redact
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()  # the writer thread's connection; created here so schema errors surface now
        except sqlite3.DatabaseError as exc:
            raise _unreadable(self.path, exc) from None
        try:
            _create_or_migrate(self._conn, self.path)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise _unreadable(self.path, exc) from None
        except BaseException:
            self._conn.close()
            raise
        self.failure: str | None = None  # why the writer thread stopped, if it did
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "closed?" checks and puts against close()
        self._closed = False
        self.dropped = 0  # records the writer could not insert (each is logged with its id and reason)
        self._thread = threading.Thread(target=self._write_loop, name=f"tunekit-requestlog-{self.path.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # an interpreter that exits without close() still commits the queue

    # -- writing -----------------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        """Queue one request for the log; with ``durable=True``, wait until it is committed.

        ``record`` has ``id`` (required, unique), ``created_at`` (Unix seconds; default now),
        ``route``, ``model``, ``version``, ``adapter``, ``status``, ``latency_ms``, ``key_id``,
        ``prompt_tokens``, ``completion_tokens``, and ``request``, ``response``, ``flags`` (any
        JSON value; request and response are redacted unless ``redact=False``). Another key is a
        ``ValueError``, and so is a value JSON cannot hold: a bad record fails here, in the caller.
        """
        row = self._row(record)
        done = _Done() if self.durable else None
        self._put(_Item(row=row, done=done))
        if done is not None:
            done.wait()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is committed; False if ``timeout`` ran out."""
        done = _Done()
        try:
            self._put(_Item(done=done))
        except RuntimeError:
            return True  # closed: everything was committed by close()
        return done.event.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued, stop the writer and close the database; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_Item(stop=True))
        self._thread.join(timeout)
        atexit.unregister(self.close)
        if self.failure is not None:
            lost = sum(1 for item in _drain(self._queue) if item.row is not None)
            logger.error("request log %s: the writer had stopped (%s); %d queued record(s) were not written", self.path, self.failure, lost)

    def check(self) -> None:
        """Raise ``RequestLogDown`` (503) when the writer thread has stopped; ``/readyz`` calls it."""
        if self.failure is not None or (not self._closed and not self._thread.is_alive()):
            raise RequestLogDown(f"request log {self.path}: the writer thread stopped ({self.failure or 'unknown reason'}); requests "
                                 "cannot be logged. See the server log, then restart the server (what was committed is kept).")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"request log {self.path} is closed")
            self.check()
            self._queue.put(item)

    def _row(self, record: dict[str, Any]) -> tuple:
        unknown = set(record) - RECORD_FIELDS
        if unknown:
            raise ValueError(f"request log record: unknown field(s) {sorted(unknown)}; the fields are {sorted(RECORD_FIELDS)}")
        if not record.get("id"):
            raise ValueError("request log record: `id` is required (the request id clients send feedback on)")
        values = dict(record)
        values.setdefault("created_at", time.time())
        for field, column in JSON_FIELDS.items():
            value = values.pop(field, None)
            if self.redact and field != "flags":
                value = redact(value)
            try:
                values[column] = None if value is None else _json(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"request log record {record['id']!r}: `{field}` is not JSON-serialisable ({exc})") from exc
        return tuple(_storable(values.get(column)) for column in COLUMNS)

    def _write_loop(self) -> None:
        """The writer thread: take everything queued, insert it in one transaction, then wake waiters."""
        try:
            stop = False
            while not stop:
                items = [self._queue.get()]
                while len(items) < MAX_BATCH:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                rows = [item.row for item in items if item.row is not None]
                errors = iter(self._insert(rows))
                for item in items:
                    error = next(errors) if item.row is not None else None
                    if item.done is not None:
                        item.done.set(error)
                    stop = stop or item.stop
        except BaseException as exc:  # not expected: _insert catches every row's error; say so rather than stop silently
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.critical("request log %s: the writer thread stopped: %s; /readyz now fails", self.path, self.failure, exc_info=exc)
            for item in _drain(self._queue):
                if item.done is not None:
                    item.done.set(RequestLogDown(f"request log {self.path}: the writer thread stopped ({self.failure})"))
        finally:
            self._conn.close()

    def _insert(self, rows: list[tuple]) -> list[Exception | None]:
        """Insert ``rows`` in one transaction; if that fails, one by one, so a bad row costs only itself.

        Returns each row's error (None: committed)."""
        if not rows:
            return []
        try:
            with self._conn:
                self._conn.executemany(INSERT, rows)
            return [None] * len(rows)
        except Exception as exc:  # noqa: BLE001 - one bad row: retry them one by one below
            logger.debug("request log %s: a batch of %d rows failed (%s); inserting them one by one", self.path, len(rows), exc)
        errors: list[Exception | None] = []
        for row in rows:
            try:
                with self._conn:
                    self._conn.execute(INSERT, row)
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - the writer survives any row
                errors.append(exc)
                self.dropped += 1
                logger.error("request log %s: could not store request %r: %s", self.path, row[0], exc)
        return errors

    # -- feedback ----------------------------------------------------------------------------------

    def add_feedback(self, request_id: str, rating: int | None, label: str | None, answer: str | None,
                     comment: str | None, key_id: str | None, input_index: int | None = None) -> int:
        """Store feedback on request ``request_id`` (on its input ``input_index`` when it had several)
        and return its id once it is committed.

        ``FeedbackError`` 422 (``invalid_feedback``) without rating, label or answer, or with a rating
        outside -1..5; 404 (``request_not_found``) when no logged request has that id.
        """
        _check_feedback(rating, label, answer)
        self.request(request_id)  # 404 unless it is logged
        if self.redact:
            label, answer, comment = redact(label), redact(answer), redact(comment)
        conn = self._connect(durable=True)
        try:
            with conn:
                cursor = conn.execute(
                    "INSERT INTO feedback (request_id, created_at, rating, label, answer, comment, key_id, input_index) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    tuple(_storable(v) for v in (request_id, time.time(), rating, label, answer, comment, key_id, input_index)),
                )
            return int(cursor.lastrowid)
        finally:
            conn.close()

    def request(self, request_id: str) -> dict[str, Any]:
        """The logged request ``request_id``, JSON fields decoded (waiting for it if it is still
        queued); ``FeedbackError`` 404 (``request_not_found``) when there is none."""
        rows = self._query("SELECT * FROM requests WHERE id = ?", (_storable(request_id),))
        if not rows:
            self.flush(timeout=10)  # the request may still be on the queue
            rows = self._query("SELECT * FROM requests WHERE id = ?", (_storable(request_id),))
        if not rows:
            raise FeedbackError(
                f"request_id: no request {request_id!r} in the request log; send the `id` of a response this server returned",
                "request_not_found", "request_id", 404,
            )
        return _decode(rows[0])

    # -- reading (monitoring) ----------------------------------------------------------------------

    def requests_since(self, ts: float) -> list[dict[str, Any]]:
        """Committed requests logged at or after Unix time ``ts``, oldest first, JSON fields decoded."""
        rows = self._query("SELECT * FROM requests WHERE created_at >= ? ORDER BY created_at, id", (ts,))
        return [_decode(row) for row in rows]

    def feedback_since(self, ts: float) -> list[dict[str, Any]]:
        """Feedback given at or after ``ts``, oldest first, each with its request under ``request``."""
        columns = ", ".join(f"r.{c} AS req__{c}" for c in COLUMNS)
        rows = self._query(
            f"SELECT f.*, {columns} FROM feedback f JOIN requests r ON r.id = f.request_id WHERE f.created_at >= ? ORDER BY f.created_at, f.id",
            (ts,),
        )
        return [
            {k: v for k, v in row.items() if not k.startswith("req__")} | {"request": _decode({c: row[f"req__{c}"] for c in COLUMNS})}
            for row in rows
        ]

    def count(self) -> int:
        """How many requests are committed (``flush()`` first to count the queued ones too)."""
        return int(self._query("SELECT COUNT(*) AS n FROM requests", ())[0]["n"])

    def _query(self, sql: str, params: tuple) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql, params)]
        finally:
            conn.close()

    def _connect(self, durable: bool | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        durable = self.durable if durable is None else durable
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        return conn


class _Done:
    """Set by the writer when an item is committed, with the error if it could not be."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: Exception | None = None

    def set(self, error: Exception | None) -> None:
        self.error = error
        self.event.set()

    def wait(self) -> None:
        self.event.wait()
        if self.error is not None:
            raise self.error


class _Item:
    """One thing on the writer's queue: a row, a flush marker (``done`` only) or the stop marker."""

    __slots__ = ("done", "row", "stop")

    def __init__(self, row: tuple | None = None, done: _Done | None = None, stop: bool = False):
        self.row, self.done, self.stop = row, done, stop


def _create_or_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables in a new database, or bring an older one to ``SCHEMA_VERSION``."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    if found is None:
        conn.executescript(f"BEGIN; {SCHEMA} INSERT INTO schema_version VALUES ({SCHEMA_VERSION}); COMMIT;")
        return
    if found > SCHEMA_VERSION:
        raise TunekitError(
            f"{path}: request log schema version {found}, newer than this tunekit's {SCHEMA_VERSION}; "
            "upgrade tunekit, or point the server at another workspace"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.executescript(f"BEGIN; {MIGRATIONS[version]}; INSERT INTO schema_version VALUES ({version}); COMMIT;")
        logger.info("request log %s: migrated the schema to version %d", path, version)


def _check_feedback(rating: int | None, label: str | None, answer: str | None) -> None:
    if rating is None and not label and not answer:
        raise FeedbackError("feedback: give at least one of `rating` (-1..5), `label` (the correct label) or `answer` (the correct answer)",
                            "invalid_feedback", None, 422)
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS):
        raise FeedbackError(f"rating: must be an integer from -1 to 5 (-1 bad, 1 good, or 1-5 stars), got {rating!r}",
                            "invalid_feedback", "rating", 422)


def _json(value: Any) -> str:
    """``value`` as JSON text SQLite can store: UTF-8 where possible, escaped where a string holds
    what UTF-8 cannot encode (a lone surrogate such as ``"\\ud800"``, which JSON allows)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True)
    return text


def _storable(value: Any) -> Any:
    """A string SQLite can store (lone surrogates backslash-escaped), or ``value`` unchanged."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _drain(q: queue.SimpleQueue) -> list[_Item]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def _unreadable(path: Path, exc: Exception) -> TunekitError:
    return TunekitError(f"{path}: not a readable request log database ({exc}). Move it aside (mv {path} {path}.corrupt) and restart: "
                        "the server starts a new log; `sqlite3 FILE .recover` may save the old rows.")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in JSON_FIELDS.values()}
    for field, column in JSON_FIELDS.items():
        out[field] = None if row[column] is None else json.loads(row[column])
    return out


# -- PII redaction -------------------------------------------------------------------------------


def redact(value: Any) -> Any:
    """``value`` with PII (``tunekit.pii``) replaced in every string it holds (dict keys are kept)."""
    if isinstance(value, str):
        return pii.redact(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
