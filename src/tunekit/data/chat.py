"""Read a generation data file (chat, Alpaca or prompt/completion rows) into canonical conversations.

Every layout becomes one canonical row ``{"id", "messages", "line"}`` whose messages are
``{"role", "content", "weight"}``: the OpenAI chat fine-tuning form, so every later stage (token
lengths, templates, training, evaluation) handles one shape only. ``weight`` is 1 on the assistant
messages the model learns from and 0 elsewhere; it is always present, so no later stage has to
guess a default. Rows are checked the way OpenAI checks fine-tuning files, because that is the
format users bring and the rules they already know; every problem names the file and the physical
line, and problems are collected (``Problems``) so one run shows the first ten of them.

A message's ``name`` is accepted, because OpenAI files carry it, and dropped: chat templates have no
place for it, and keeping it only in the data would make the training prompt differ from the
serving prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunekit.config import ReadOptions
from tunekit.data.problems import Problems
from tunekit.data.read import decode, detect_format, read_table
from tunekit.errors import DataError

FORMATS = {".jsonl": "jsonl", ".json": "json"}
DEFAULT_COLUMNS = ("prompt", "completion")
LAYOUTS = ("chat", "alpaca", "prompt_completion")
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name", "weight")
ALPACA_KEYS = ("instruction", "input", "output")
_SPACE = re.compile(r"[ \t\r\n]*")  # JSON's whitespace, nothing more


@dataclass(frozen=True)
class _Spec:
    """What a row's keys mean: the prompt/completion columns, the extra keys kept as metadata, the fallbacks."""

    columns: tuple[str, str] = DEFAULT_COLUMNS
    metadata: tuple[str, ...] = ()
    fallback: dict[str, str] = field(default_factory=dict)

    def allowed(self, own: Sequence[str]) -> tuple[str, ...]:
        """Top-level keys a row may have: the layout's own (``a.b`` allows ``a``), metadata and fallbacks."""
        keys = [*own, *self.metadata, *self.fallback.values()]
        return tuple(dict.fromkeys(key.split(".")[0] for key in keys)) + tuple(keys)


def read_conversations(path: Path, layout: str = "auto", system_prompt: str | None = None,
                       prompt_column: str = "prompt", completion_column: str = "completion",
                       encoding: str = "utf-8", min_examples: int = 10, *, options: ReadOptions | None = None,
                       metadata_columns: Sequence[str] = (), fallback_columns: dict[str, str] | None = None) -> list[dict]:
    """Canonical rows: {"id": str, "messages": [{"role": str, "content": str, "weight": int (0|1)}], "line": int, "at": str}

    JSON Lines and JSON lists hold objects of any layout; CSV, TSV and Parquet files hold
    ``alpaca`` or ``prompt_completion`` rows, one per record, read with ``options`` (the
    ``data`` section's reading options). ``layout="auto"`` decides once per file, from the first
    row's keys: mixing layouts in one file is far more often a mistake than a plan, and the rows
    that disagree are then named. Keys listed in ``metadata_columns`` are kept as ``meta``;
    ``fallback_columns`` names a column read where a used one is empty or null. The ``id``
    hashes the canonical messages, so identical examples share an id (which is what the duplicate
    and leakage checks look for), wherever they sit in whichever file.
    """
    if layout not in ("auto", *LAYOUTS):
        raise DataError(f"data.layout: unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")
    path = Path(path)
    options = options or ReadOptions(key="data.train", path=str(path), encoding=encoding)
    problems = Problems()
    items = _items(path, options, problems)
    spec = _Spec((prompt_column, completion_column), tuple(metadata_columns), dict(fallback_columns or {}))
    rows = []
    for line, at, value in items:
        where = f"{path} {at}"
        if not isinstance(value, dict):
            problems.add(f"{where}: expected a JSON object {{...}}, found {_json_type(value)}; each example is one object")
            continue
        if layout == "auto":
            layout = _detect_layout(value, spec.columns)
            if layout == "auto":
                problems.add(f"{where}: cannot tell the layout from the keys {_keys(value) or '(none)'}; expected one of "
                             f'chat {{"messages": [...]}}, alpaca {{"instruction", "input" (optional), "output"}}, '
                             f'prompt_completion {{"{prompt_column}", "{completion_column}"}}: fix the rows, or set '
                             + ("`data.layout` (and `data.prompt_column` / `data.completion_column`)" if spec.columns == DEFAULT_COLUMNS
                                else "`data.layout`, or correct `data.prompt_column` / `data.completion_column`"))
                break
        messages = _LAYOUTS[layout](value, where, problems, spec)
        if messages is None:
            continue
        if system_prompt is not None and all(m["role"] != "system" for m in messages):
            messages.insert(0, {"role": "system", "content": _lf(system_prompt), "weight": 0})
        row = {"id": _example_id(messages), "messages": messages, "line": line, "at": at}
        meta = {column: _meta_text(_get(value, column)) for column in spec.metadata}
        if meta:
            row["meta"] = meta
        rows.append(row)
    problems.raise_if_any(str(path))
    if len(rows) < min_examples:
        raise DataError(f"{path}: found {len(rows)} example{'s' if len(rows) != 1 else ''}; fine-tuning needs at least "
                        f"{min_examples} (OpenAI requires 10, and a few dozen good ones is a sensible start): add examples")
    return rows


def render_plain(messages: list[dict]) -> str:
    """``role: content``, one message per line, for reports and duplicate checks.

    Content is kept verbatim, so a multi-line answer stays multi-line: a report shows what the model
    sees, and two examples that differ only in line breaks are not duplicates.
    """
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _items(path: Path, options: ReadOptions, problems: Problems) -> list[tuple[int, str, Any]]:
    """(line number, location, value) per row: JSON objects, or the records of a CSV/TSV/Parquet file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (relative paths are relative to the config file's folder)")
    fmt = detect_format(path, options)
    if fmt not in ("jsonl", "json"):
        table = read_table(path, options)
        table.problems.raise_if_any(str(path))
        return [(record.number, record.location, record.values) for record in table.records]
    text = _read_text(path, options.encoding, options.key)
    items = _jsonl_items(path, text, problems) if fmt == "jsonl" else _json_items(path, text)
    return [(line, f"line {line}", value) for line, value in items]


def _read_text(path: Path, encoding: str, key: str = "data") -> str:
    text = decode(path.read_bytes(), path, encoding, key)
    if not text.strip():
        raise DataError(f"{path}: the file is empty; it must hold at least one example")
    return text


def _jsonl_items(path: Path, text: str, problems: Problems) -> list[tuple[int, Any]]:
    """(line, value) per non-blank line; lines that are not JSON are collected as problems."""
    items = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.add(f"{path} line {number}: not valid JSON ({exc.msg} at character {exc.colno}); "
                         'each line must be one complete object, like {"messages": [...]}')
    return items


def _json_items(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line, value) per element of the top-level list.

    ``json.loads`` first, for its error line and column on a broken file; then the list is decoded
    again element by element with ``raw_decode``, counting the newlines skipped, because only that
    tells on which line each element starts.
    """
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                        "a .json data file must be one list of example objects") from None
    if not isinstance(whole, list):
        hint = f" with keys {_keys(whole)}" if isinstance(whole, dict) else ""
        raise DataError(f"{path} line 1: expected a JSON list of examples [{{...}}, ...], found {_json_type(whole)}{hint}; "
                        "put the examples in one top-level list (or use JSON Lines, .jsonl)")
    decoder, items, line, counted = json.JSONDecoder(), [], 1, 0
    idx = _SPACE.match(text, text.index("[") + 1).end()
    while text[idx] != "]":  # the text is valid JSON, so every element is followed by "," or "]"
        line, counted = line + text.count("\n", counted, idx), idx
        value, idx = decoder.raw_decode(text, idx)
        items.append((line, value))
        idx = _SPACE.match(text, idx).end()
        if text[idx] == ",":
            idx = _SPACE.match(text, idx + 1).end()
    return items


def _detect_layout(row: dict, columns: tuple[str, str]) -> str:
    if "messages" in row:
        return "chat"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if all(column in row for column in columns):
        return "prompt_completion"
    return "auto"


def _chat(row: dict, where: str, problems: Problems, spec: _Spec) -> list[dict] | None:
    tools = {"tools", "functions", "parallel_tool_calls"} & set(row)
    ok = _only_keys(row, spec.allowed(("messages",)), f"{where}: chat row has", problems, " (tools are not supported)" if tools else _KEEP_HINT)
    raw = row.get("messages")
    if not isinstance(raw, list) or not raw:
        found = 'no "messages"' if "messages" not in row else f'"messages" is {"an empty list" if raw == [] else _json_type(raw)}'
        problems.add(f'{where}: {found}; a chat row needs a non-empty list {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
        return None
    messages = [_message(message, f"{where}: message {n}", problems) for n, message in enumerate(raw, 1)]
    if not ok or None in messages:
        return None
    if not any(m["role"] == "assistant" and m["weight"] == 1 for m in messages):
        weighted = any(m["role"] == "assistant" for m in messages)
        problems.add(f"{where}: " + ("every assistant message has weight 0" if weighted else "no assistant message")
                     + "; there is nothing to train on: add an assistant reply (with weight 1, or no weight)")
        return None
    return messages


def _message(message: Any, where: str, problems: Problems) -> dict | None:
    """One canonical message, or None after adding every problem it has."""
    if not isinstance(message, dict):
        problems.add(f'{where} is {_json_type(message)}, not an object like {{"role": "user", "content": "..."}}')
        return None
    before = problems.total
    _only_keys(message, MESSAGE_KEYS, f"{where} has", problems,
               " (tool and function calls are not supported)" if {"tool_calls", "function_call"} & set(message) else "")
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        found = 'no "role"' if "role" not in message else f"role {json.dumps(role, ensure_ascii=False)}"
        problems.add(f"{where} has {found}; allowed roles: {', '.join(ROLES)} (tool and function messages are not supported)")
    if "content" not in message:
        problems.add(f'{where} has no "content"; every message needs its text as a string')
    elif content is None:
        problems.add(f'{where} has null "content"; OpenAI allows that only with tool calls, which tunekit does not support: put the text there')
    elif not isinstance(content, str):
        problems.add(f'{where}: "content" is {_json_type(content)}, not a string (content parts and images are not supported); put the text there')
    elif role == "assistant" and not content.strip():
        problems.add(f"{where} is an assistant message with empty content; there is nothing to learn: write the reply or remove the example")
    default = 1 if role == "assistant" else 0
    weight = message.get("weight", default)
    if weight not in (0, 1) or isinstance(weight, bool):
        problems.add(f'{where} has "weight" {json.dumps(weight)}; it must be 0 (do not train on this reply) or 1 (train on it)')
    elif weight == 1 and role in ("system", "user"):
        problems.add(f'{where} is a {role} message with "weight" 1; only assistant messages are trained: remove the weight')
    if problems.total > before:
        return None
    return {"role": role, "content": _lf(content), "weight": int(weight)}


def _alpaca(row: dict, where: str, problems: Problems, spec: _Spec) -> list[dict] | None:
    ok = _only_keys(row, spec.allowed(ALPACA_KEYS), f"{where}: alpaca row has", problems, _KEEP_HINT)
    instruction = _field(row, "instruction", where, problems, spec=spec)
    extra = _field(row, "input", where, problems, required=False, spec=spec)
    output = _field(row, "output", where, problems, nonempty=True, spec=spec)
    if not ok or instruction is None or extra is None or output is None:
        return None
    prompt = instruction + "\n\n" + extra if extra else instruction
    return [{"role": "user", "content": _lf(prompt), "weight": 0}, {"role": "assistant", "content": _lf(output), "weight": 1}]


def _prompt_completion(row: dict, where: str, problems: Problems, spec: _Spec) -> list[dict] | None:
    prompt_column, completion_column = spec.columns
    hint = " (set `data.prompt_column` / `data.completion_column` if your keys differ)" if spec.columns == DEFAULT_COLUMNS else ""
    ok = _only_keys(row, spec.allowed(spec.columns), f"{where}: prompt_completion row has", problems, hint + _KEEP_HINT)
    prompt = _field(row, prompt_column, where, problems, spec=spec)
    completion = _field(row, completion_column, where, problems, nonempty=True, spec=spec)
    if not ok or prompt is None or completion is None:
        return None
    return [{"role": "user", "content": _lf(prompt), "weight": 0}, {"role": "assistant", "content": _lf(completion), "weight": 1}]


_KEEP_HINT = "; to keep it as metadata (e.g. for slices), list it in `data.metadata_columns`"
_MISSING = object()


def _get(row: dict, key: str, default: Any = None) -> Any:
    """``row[key]``; a dotted key (``answer.text``) looks into nested objects when no key has that exact name."""
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def _field(row: dict, key: str, where: str, problems: Problems, required: bool = True, nonempty: bool = False,
           spec: _Spec | None = None) -> str | None:
    """The string at ``key`` ("" when optional and absent), or None after adding a problem.

    A missing, null or blank value is read from ``key``'s fallback column (``data.fallback_columns``) when it has one.
    """
    value = _get(row, key, _MISSING)
    other = (spec.fallback if spec else {}).get(key)
    if other is not None and (value is _MISSING or value is None or (isinstance(value, str) and not value.strip())):
        key, value = f'{key}" and its fallback "{other}', _get(row, other, _MISSING)
    if value is _MISSING:
        if not required:
            return ""
        problems.add(f'{where}: "{key}" is missing; add it as a string')
        return None
    if value is None and not required:
        return ""
    if value is None:
        problems.add(f'{where}: "{key}" is null; put the text there, remove the example, or name a column to read instead '
                     "in `data.fallback_columns`")
        return None
    if not isinstance(value, str):
        problems.add(f'{where}: "{key}" is {_json_type(value)}, not a string; put the text there')
        return None
    if nonempty and not value.strip():
        problems.add(f'{where}: "{key}" is empty; it is what the model learns to write: fill it in or remove the example')
        return None
    return value


def _only_keys(obj: dict, allowed: tuple[str, ...], where: str, problems: Problems, hint: str = "") -> bool:
    unknown = [key for key in obj if key not in allowed]
    if unknown:
        noun = "key" if len(unknown) == 1 else "keys"
        problems.add(f"{where} unrecognised {noun} {_keys(unknown)}{hint}; remove or rename it (allowed keys: {', '.join(allowed)})")
    return not unknown


def _meta_text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def _example_id(messages: list[dict]) -> str:
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _keys(keys: Any) -> str:
    return ", ".join(json.dumps(str(key), ensure_ascii=False) for key in keys)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_LAYOUTS = {"chat": _chat, "alpaca": _alpaca, "prompt_completion": _prompt_completion}
