"""OpenAI's Files API (``/v1/files``): uploads for fine-tuning jobs and evals, checked on arrival.

Why validate at upload: OpenAI answers a bad training file only when a job fails minutes later. Here
the whole file is checked when it arrives, and every problem (up to ``MAX_REPORTED``, then "and N
more") is named by line number and field path in one 400 answer, so a client fixes the file once.
A file is accepted whole or refused whole: no line is ever dropped silently.

Why content-addressed blobs (``WORKSPACE/service/files/<sha256[:2]>/<sha256>``): teams upload the
same training file again and again (one per job, per retry); it is stored once, and the job runner
reads it from ``FileStore.path``. Each blob is written to a temporary file and renamed into place,
so a reader never sees half a file. A blob is removed when the last file that names it is deleted.

Why a ``deleted_at`` column rather than removing rows: the SDK's auto-pagination passes the last id
of a page as ``after``, and "list every file and delete it" is a common loop; a removed row would
break the cursor halfway. A deleted file is otherwise gone: 404 on every route, blob freed.

Every file belongs to the project of the key that uploaded it. Another project's file answers 404
exactly like a missing one, so ids reveal nothing across projects.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from tunekit.artifacts import Workspace
from tunekit.errors import NotFound, ServingError
from tunekit.serve.keys import KeyInfo, project_of
from tunekit.service.db import connect, new_id, now

__all__ = ["FORMATS", "MIN_EXAMPLES", "PURPOSES", "SERVER_PURPOSES", "FileInvalid", "FileStore", "FileTooLarge", "clean_filename", "router", "validate"]

PURPOSES = ("fine-tune", "evals", "user_data")  # what a client may upload
SERVER_PURPOSES = ("fine-tune-results",)  # what only the server writes (a job's metrics CSV); clients read it like any file
FORMATS = ("chat", "preference", "prompt_completion", "evals", "user_data", "results")
MIN_EXAMPLES = 10  # OpenAI refuses a fine-tuning file with fewer examples
MAX_REPORTED = 20  # problems listed in one message; the rest are counted
ROLES = ("system", "developer", "user", "assistant", "tool")
_LABEL = {"chat": "chat", "preference": "preference", "prompt_completion": "prompt/completion"}
_EXPECTED = ('expected one of OpenAI\'s fine-tuning formats: {"messages": [...]} (chat), '
             '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]} (preference) '
             'or {"prompt": "...", "completion": "..."} (prompt/completion)')
_CHUNK = 1 << 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    project    TEXT NOT NULL,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    format     TEXT NOT NULL,
    examples   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX IF NOT EXISTS files_by_project ON files (project, seq);
CREATE INDEX IF NOT EXISTS files_by_sha256 ON files (sha256);
"""


class FileInvalid(ServingError):
    """400: the upload is not a valid file for its purpose; the message lists every problem found
    (line, field path, what is wrong)."""

    http_status, code = 400, "invalid_file"

    def __init__(self, message: str, param: str = "file", code: str | None = None):
        super().__init__(message, code, param)


class FileTooLarge(ServingError):
    """413: the upload has more bytes than the store's ``max_bytes``."""

    http_status, code = 413, "file_too_large"

    def __init__(self, max_bytes: int):
        super().__init__(f"the file has more than {max_bytes} bytes ({_size(max_bytes)}), this server's limit for one file; "
                         "split it into smaller files", param="file")


# --- validation ------------------------------------------------------------------------------


def validate(purpose: str, content: bytes) -> tuple[str, int]:
    """The file's format and number of examples, or ``FileInvalid`` listing what is wrong.

    ``fine-tune``: JSONL, every line one example in the same one of OpenAI's three formats, at least
    ``MIN_EXAMPLES`` of them. ``evals``: JSONL, every line a JSON object. ``user_data``: anything.
    ``fine-tune-results`` (written by the job runner, never uploaded): anything, format ``results``.
    """
    if purpose in SERVER_PURPOSES:
        return "results", 0
    _check_purpose(purpose)
    if purpose == "user_data":
        return "user_data", 0
    problems = _Problems(purpose)
    file_format: str | None = None
    first_line = 0
    examples = 0
    for number, row in _rows(content, problems):
        examples += 1  # every non-blank line is an example, valid or not
        if row is None:
            continue
        if purpose == "evals":
            if "item" in row and not isinstance(row["item"], dict):
                problems.add(number, "item", f"expected an object (the row's data), got {_kind(row['item'])}")
            continue
        kind = _detect(row)
        if kind is None:
            fields = ", ".join(map(repr, list(row)[:8])) or "none"
            problems.add(number, "", f"not a fine-tuning example (fields: {fields}); {_EXPECTED}")
            continue
        if file_format is None:
            file_format, first_line = kind, number
        elif kind != file_format:
            problems.note(f"line {number} is {_LABEL[kind]} but line {first_line} set the file's format to "
                          f"{_LABEL[file_format]} (every line must use the same format)")
            continue
        _EXAMPLE_CHECKS[kind](row, lambda path, text, n=number: problems.add(n, path, text))
    if examples == 0 and not problems.count:
        what = "one example per line" if purpose == "fine-tune" else "one JSON object per line"
        raise FileInvalid(f"the file is empty (no non-blank lines); a {purpose} file is JSONL, {what}")
    if purpose == "fine-tune" and 0 < examples < MIN_EXAMPLES:
        problems.note(f"the file has {examples} example{'s' if examples != 1 else ''}; fine-tuning needs at least "
                      f"{MIN_EXAMPLES} (OpenAI's minimum): add more examples")
    problems.raise_if_any()
    return (file_format or "evals"), examples


class _Problems:
    """Collects problems as ``line N: path: text``; keeps the first ``MAX_REPORTED`` and counts all."""

    def __init__(self, purpose: str):
        self.purpose, self.items, self.count = purpose, [], 0

    def add(self, line: int, path: str, text: str) -> None:
        self.note(": ".join(part for part in (f"line {line}", path, text) if part))

    def note(self, problem: str) -> None:
        self.count += 1
        if len(self.items) < MAX_REPORTED:
            self.items.append(problem)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = f"; and {self.count - len(self.items)} more" if self.count > len(self.items) else ""
        head = f"invalid {self.purpose} file ({self.count} problems): " if self.count > 1 else f"invalid {self.purpose} file: "
        raise FileInvalid(head + "; ".join(self.items) + more)


def _rows(content: bytes, problems: _Problems) -> Iterator[tuple[int, dict | None]]:
    """``(line number, object)`` for every non-blank line; the object is None when the line is not
    UTF-8, not JSON or not an object (reported to ``problems``). Lines are sliced one at a time, so
    the file is never copied whole."""
    start = 3 if content[:3] == b"\xef\xbb\xbf" else 0  # a UTF-8 byte order mark, as some editors write
    number = 0
    while start < len(content):
        end = content.find(b"\n", start)
        end = len(content) if end < 0 else end
        raw, offset = content[start:end], start
        start, number = end + 1, number + 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(number, "", f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {offset + exc.start} of the file "
                                     f"(byte {exc.start + 1} of the line); save the file as UTF-8")
            yield number, None
            continue
        if not text.strip():
            continue
        try:
            row = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            problems.add(number, "", f"invalid JSON: {exc.msg} (column {exc.colno})")
            row = None
        except ValueError as exc:
            problems.add(number, "", f"invalid JSON: {exc}")
            row = None
        except RecursionError:
            problems.add(number, "", "invalid JSON: nested too deeply")
            row = None
        else:
            if not isinstance(row, dict):
                problems.add(number, "", f"expected a JSON object, got {_kind(row)}")
                row = None
        yield number, row


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _detect(row: dict) -> str | None:
    if "messages" in row:
        return "chat"
    if {"input", "preferred_output", "non_preferred_output"} & row.keys():
        return "preference"
    if {"prompt", "completion"} & row.keys():
        return "prompt_completion"
    return None


Add = Callable[[str, str], None]  # add(field path, what is wrong)


def _chat(row: dict, add: Add) -> None:
    _known(row, ("messages", "tools", "parallel_tool_calls"), "", add)
    _tools(row, "", add)
    if _messages(row.get("messages"), "messages", add) and not any(
            m["role"] == "assistant" and m.get("weight", 1) != 0 for m in row["messages"]):
        add("messages", "no assistant message to learn from: at least one assistant message without weight 0 is needed")


def _preference(row: dict, add: Add) -> None:
    _known(row, ("input", "preferred_output", "non_preferred_output"), "", add)
    given = row.get("input")
    if not isinstance(given, dict):
        add("input", f'expected an object {{"messages": [...]}}, got {_kind(given)}')
    else:
        _known(given, ("messages", "tools", "parallel_tool_calls"), "input", add)
        _tools(given, "input.", add)
        _messages(given.get("messages"), "input.messages", add)
    for field in ("preferred_output", "non_preferred_output"):
        output = row.get(field)
        if not isinstance(output, list) or len(output) != 1:
            add(field, f"expected an array of one assistant message, got {_kind(output, count=True)}")
        elif _message(output[0], f"{field}[0]", add) and output[0]["role"] != "assistant":
            add(f"{field}[0].role", f"{_show(output[0]['role'])} must be 'assistant': the output is the answer to prefer or avoid")


def _prompt_completion(row: dict, add: Add) -> None:
    _known(row, ("prompt", "completion"), "", add)
    for field in ("prompt", "completion"):
        if not isinstance(row.get(field), str):
            add(field, f"expected a string, got {_kind(row.get(field))}")
    if row.get("completion") == "":
        add("completion", "empty: an example with nothing to complete teaches nothing")


_EXAMPLE_CHECKS: dict[str, Callable[[dict, Add], None]] = {
    "chat": _chat, "preference": _preference, "prompt_completion": _prompt_completion}


def _messages(messages: Any, path: str, add: Add) -> bool:
    """Check a list of messages; True when it and every message are valid."""
    if not isinstance(messages, list) or not messages:
        add(path, f"expected a non-empty array of messages, got {_kind(messages, count=True)}")
        return False
    valid = [_message(m, f"{path}[{i}]", add) for i, m in enumerate(messages)]  # every message is checked and reported
    return all(valid)


def _message(message: Any, path: str, add: Add) -> bool:
    """Check one message (role, content, weight, tool calls); True when it is valid."""
    if not isinstance(message, dict):
        add(path, f"expected a message object, got {_kind(message)}")
        return False
    errors = []

    def bad(field: str, text: str) -> None:
        errors.append(field)
        add(f"{path}.{field}" if field else path, text)

    role = message.get("role")
    if "role" not in message:
        bad("role", f"required, but missing (one of {', '.join(ROLES)})")
        return False
    if role not in ROLES:
        bad("role", f"{_show(role)} is not one of {', '.join(ROLES)}")
        return False
    allowed = ["role", "content", "name"] + {"assistant": ["weight", "tool_calls"], "tool": ["tool_call_id"]}.get(role, [])
    for field in message:
        if field not in allowed:
            bad(field, f"unknown field for role {role!r} (allowed: {', '.join(allowed)})")
    content = message.get("content")
    if role == "assistant" and message.get("tool_calls") and content is None:
        pass  # an assistant turn that only calls tools
    elif isinstance(content, list):
        if not content:
            bad("content", "an empty array; send a string or text parts")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = repr(part.get("type")) if isinstance(part, dict) else _kind(part)
                bad(f"content[{j}]", f'expected a text part {{"type": "text", "text": "..."}}, got {kind}')
    elif not isinstance(content, str):
        need = "a string, an array of text parts, or null with tool_calls" if role == "assistant" else "a string or an array of text parts"
        bad("content", f"required, but missing (expected {need})" if "content" not in message else f"expected {need}, got {_kind(content)}")
    if "weight" in message and role == "assistant" and (isinstance(message["weight"], bool) or message["weight"] not in (0, 1)):
        bad("weight", f"{_show(message['weight'])} is not 0 or 1 (0: do not learn from this message)")
    if "name" in message and not isinstance(message["name"], str):
        bad("name", f"expected a string, got {_kind(message['name'])}")
    if "tool_call_id" in message and role == "tool" and not isinstance(message["tool_call_id"], str):
        bad("tool_call_id", f"expected a string, got {_kind(message['tool_call_id'])}")
    if "tool_calls" in message and role == "assistant":
        calls = message["tool_calls"]
        if not isinstance(calls, list) or not calls:
            bad("tool_calls", f"expected a non-empty array of tool calls, got {_kind(calls, count=True)}")
        else:
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not (isinstance(call, dict) and isinstance(call.get("id"), str) and call.get("type", "function") == "function"
                        and isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("arguments"), str)):
                    bad(f"tool_calls[{j}]", 'expected {"id": "...", "type": "function", "function": {"name": "...", "arguments": "<JSON string>"}}')
    return not errors


def _tools(row: dict, prefix: str, add: Add) -> None:
    if "parallel_tool_calls" in row and not isinstance(row["parallel_tool_calls"], bool):
        add(f"{prefix}parallel_tool_calls", f"expected true or false, got {_kind(row['parallel_tool_calls'])}")
    if "tools" not in row:
        return
    tools = row["tools"]
    if not isinstance(tools, list):
        add(f"{prefix}tools", f"expected an array of tools, got {_kind(tools)}")
        return
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict) and isinstance(fn.get("name"), str)):
            add(f"{prefix}tools[{i}]", 'expected {"type": "function", "function": {"name": "...", "parameters": {...}}}')


def _known(obj: dict, fields: tuple[str, ...], path: str, add: Add) -> None:
    for field in obj:
        if field not in fields:
            add(f"{path}.{field}" if path else field, f"unknown field (allowed here: {', '.join(fields)})")


def _kind(value: Any, count: bool = False) -> str:
    """A JSON value's type in words, for messages ("a string", "an array of 2 items")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'s' if len(value) != 1 else ''}" if count else "an array"
    return "an object"


def _show(value: Any) -> str:
    """A value quoted for a message, cut to 40 characters."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return _kind(value) if isinstance(value, list | dict) else json.dumps(value)


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise FileInvalid(f"purpose {_show(purpose)} is not accepted here; use one of {', '.join(PURPOSES)}",
                          param="purpose", code="invalid_purpose")


def _size(n: int) -> str:
    """``n`` bytes for a person: ``512 MiB``, ``100 bytes``."""
    if n < 1024:
        return f"{n} bytes"
    power = min(3, (n.bit_length() - 1) // 10)
    return f"{n / 1024**power:.4g} {('KiB', 'MiB', 'GiB')[power - 1]}"


def clean_filename(name: str | None) -> str:
    """The client's file name as metadata: no directories, no control characters, at most 255
    characters. It is never opened as a path."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", (name or "").replace("\\", "/")).rsplit("/", 1)[-1].strip()
    return name[:255] or "file"


# --- storage ---------------------------------------------------------------------------------


class FileStore:
    """Files in ``workspace.service_db`` (metadata) and ``workspace.service / "files"`` (blobs by
    SHA-256). Safe across threads and processes: each call opens its own connection, and the steps
    that put or free a blob hold SQLite's write lock, so a blob is never freed under a new upload."""

    def __init__(self, workspace: Workspace, max_bytes: int = 512 * 2**20):
        self.workspace, self.max_bytes = workspace, max_bytes
        self.db = workspace.service_db
        self.folder = workspace.service / "files"

    def create(self, project: str, filename: str, purpose: str, content: bytes) -> dict:
        """Validate ``content`` for ``purpose`` and store it; the new file's OpenAI object.
        ``FileInvalid`` (400) or ``FileTooLarge`` (413) store nothing. The server's own files (a
        job's ``fine-tune-results``) come in here too; the upload route accepts only ``PURPOSES``."""
        if purpose not in SERVER_PURPOSES:
            _check_purpose(purpose)
        if len(content) > self.max_bytes:
            raise FileTooLarge(self.max_bytes)
        file_format, examples = validate(purpose, content)
        digest = hashlib.sha256(content).hexdigest()
        blob = self._blob(digest)
        temp = None if blob.exists() else self._write_temp(blob, content)  # the slow write, outside the lock
        row = {"id": new_id("file"), "project": project, "filename": clean_filename(filename), "purpose": purpose,
               "bytes": len(content), "sha256": digest, "format": file_format, "examples": examples, "created_at": now()}
        try:
            with connect(self.db, _SCHEMA) as conn:
                conn.execute("BEGIN IMMEDIATE")
                if temp is not None:
                    os.replace(temp, blob)
                    temp = None
                elif not blob.exists():  # freed by a delete since we looked: write it again, under the lock
                    os.replace(self._write_temp(blob, content), blob)
                conn.execute(f"INSERT INTO files ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        finally:
            if temp is not None:
                Path(temp).unlink(missing_ok=True)
        return _object(row)

    def list(self, project: str, purpose: str | None = None, after: str | None = None, limit: int = 10000,
             order: str = "desc") -> tuple[builtins.list[dict], bool]:
        """The project's files, newest first (``order="desc"``) or oldest first, after the file
        ``after`` (a cursor: the last id of the previous page); and whether more follow."""
        if not 1 <= limit <= 10000:
            raise ServingError(f"limit {limit} is out of range; use 1 to 10000", "invalid_value", "limit", 400)
        if order not in ("asc", "desc"):
            raise ServingError(f"order {_show(order)} is not one of asc, desc", "invalid_value", "order", 400)
        where, args = ["project = ?", "deleted_at IS NULL"], [project]
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        with connect(self.db, _SCHEMA) as conn:
            if after is not None:
                cursor = conn.execute("SELECT seq FROM files WHERE id = ? AND project = ?", (after, project)).fetchone()
                if cursor is None:  # a deleted file still works as a cursor; an unknown one does not
                    raise ServingError(f"after: no file {_show(after)} in this project to continue after; pass the last id of "
                                       "the previous page", "invalid_value", "after", 400)
                where.append("seq < ?" if order == "desc" else "seq > ?")
                args.append(cursor["seq"])
            rows = conn.execute(f"SELECT * FROM files WHERE {' AND '.join(where)} ORDER BY seq {order.upper()} LIMIT ?",
                                (*args, limit + 1)).fetchall()
        return [_object(row) for row in rows[:limit]], len(rows) > limit

    def get(self, project: str, file_id: str) -> dict:
        """The file's OpenAI object; ``NotFound`` when it is missing, deleted or another project's."""
        return _object(self._row(project, file_id))

    def content(self, project: str, file_id: str) -> bytes:
        """The file's bytes, exactly as uploaded."""
        return self.path(project, file_id).read_bytes()

    def path(self, project: str, file_id: str) -> Path:
        """Where the file's bytes lie (shared with every file of the same content: read, never write)."""
        return self._blob(self._row(project, file_id)["sha256"])

    def format(self, project: str, file_id: str) -> str:
        """What validation found: ``chat``, ``preference``, ``prompt_completion``, ``evals``, ``user_data``
        or (a job's result file) ``results``."""
        return self._row(project, file_id)["format"]

    def examples(self, project: str, file_id: str) -> int:
        """How many examples (non-blank lines) the file has; 0 for ``user_data``."""
        return self._row(project, file_id)["examples"]

    def delete(self, project: str, file_id: str) -> dict:
        """Delete the file; its blob goes too when no other file has the same content."""
        with connect(self.db, _SCHEMA) as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = self._row(project, file_id, conn)
            conn.execute("UPDATE files SET deleted_at = ? WHERE seq = ?", (now(), row["seq"]))
            if conn.execute("SELECT 1 FROM files WHERE sha256 = ? AND deleted_at IS NULL LIMIT 1", (row["sha256"],)).fetchone() is None:
                self._blob(row["sha256"]).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def _row(self, project: str, file_id: str, conn: sqlite3.Connection | None = None) -> sqlite3.Row:
        if conn is None:
            with connect(self.db, _SCHEMA) as fresh:
                return self._row(project, file_id, fresh)
        row = conn.execute("SELECT * FROM files WHERE id = ? AND project = ? AND deleted_at IS NULL", (file_id, project)).fetchone()
        if row is None:
            raise NotFound(f"no file {_show(file_id)} in this project", param="file_id")
        return row

    def _blob(self, digest: str) -> Path:
        return self.folder / digest[:2] / digest

    @staticmethod
    def _write_temp(blob: Path, content: bytes) -> str:
        """Write ``content`` to a temporary file beside ``blob`` (same file system, so the rename into
        place is atomic) and flush it to disk."""
        blob.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=blob.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return temp


def _object(row: sqlite3.Row | dict) -> dict:
    """OpenAI's file object (``openai.types.FileObject``)."""
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"], "filename": row["filename"],
            "purpose": row["purpose"], "status": "processed", "status_details": None, "expires_at": None}


# --- routes ----------------------------------------------------------------------------------


def router(store: FileStore, require: Callable[[str], Any]) -> APIRouter:
    """``/v1/files`` as OpenAI serves it; ``require`` is ``Runtime.require`` (every route needs a
    ``fine-tune`` key and works in that key's project)."""
    api = APIRouter(tags=["Files"])
    fine_tune = require("fine-tune")

    @api.post("/v1/files", summary="Upload a file (validated for its purpose)")
    def upload(file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()], key: KeyInfo | None = fine_tune) -> dict:
        # a sync route: reading, validating and hashing run in the thread pool, off the event loop
        _check_purpose(purpose)
        if file.size is not None and file.size > store.max_bytes:
            raise FileTooLarge(store.max_bytes)
        content = bytearray()
        while chunk := file.file.read(_CHUNK):  # never hold more than max_bytes + one chunk
            content += chunk
            if len(content) > store.max_bytes:
                raise FileTooLarge(store.max_bytes)
        return store.create(project_of(key), file.filename or "", purpose, content)

    @api.get("/v1/files", summary="List the project's files")
    def list_files(purpose: str | None = None, after: str | None = None, limit: int = 10000, order: str = "desc",
                   key: KeyInfo | None = fine_tune) -> dict:
        data, has_more = store.list(project_of(key), purpose, after, limit, order)
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": has_more}

    @api.get("/v1/files/{file_id}", summary="One file's object")
    def retrieve(file_id: str, key: KeyInfo | None = fine_tune) -> dict:
        return store.get(project_of(key), file_id)

    @api.get("/v1/files/{file_id}/content", summary="The file's bytes", response_class=StreamingResponse)
    def content(file_id: str, key: KeyInfo | None = fine_tune) -> StreamingResponse:
        path = store.path(project_of(key), file_id)
        try:
            fh = path.open("rb")  # opened now: a delete after this point cannot cut the answer short
        except FileNotFoundError:
            raise NotFound(f"no file {_show(file_id)} in this project", param="file_id") from None
        size = os.fstat(fh.fileno()).st_size

        def chunks() -> Iterator[bytes]:
            with fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk

        return StreamingResponse(chunks(), media_type="application/octet-stream", headers={"Content-Length": str(size)})

    @api.delete("/v1/files/{file_id}", summary="Delete a file")
    def delete(file_id: str, key: KeyInfo | None = fine_tune) -> dict:
        return store.delete(project_of(key), file_id)

    return api
