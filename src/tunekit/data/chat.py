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
from pathlib import Path
from typing import Any

from tunekit.data.problems import Problems
from tunekit.data.read import decode
from tunekit.errors import DataError

FORMATS = {".jsonl": "jsonl", ".json": "json"}
LAYOUTS = ("chat", "alpaca", "prompt_completion")
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name", "weight")
ALPACA_KEYS = ("instruction", "input", "output")
_SPACE = re.compile(r"[ \t\r\n]*")  # JSON's whitespace, nothing more


def read_conversations(path: Path, layout: str = "auto", system_prompt: str | None = None,
                       prompt_column: str = "prompt", completion_column: str = "completion",
                       encoding: str = "utf-8", min_examples: int = 10) -> list[dict]:
    """Canonical rows: {"id": str, "messages": [{"role": str, "content": str, "weight": int (0|1)}], "line": int}

    ``layout="auto"`` decides once per file, from the first object's keys: mixing layouts in one
    file is far more often a mistake than a plan, and the rows that disagree are then named.
    The ``id`` hashes the canonical messages, so identical examples share an id (which is what the
    duplicate and leakage checks look for), wherever they sit in whichever file.
    """
    if layout not in ("auto", *LAYOUTS):
        raise DataError(f"data.layout: unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")
    path = Path(path)
    text = _read_text(path, encoding)
    problems = Problems()
    items = _jsonl_items(path, text, problems) if FORMATS[path.suffix.lower()] == "jsonl" else _json_items(path, text)
    columns = (prompt_column, completion_column)
    rows = []
    for line, value in items:
        where = f"{path} line {line}"
        if not isinstance(value, dict):
            problems.add(f"{where}: expected a JSON object {{...}}, found {_json_type(value)}; each example is one object")
            continue
        if layout == "auto":
            layout = _detect_layout(value, columns)
            if layout == "auto":
                problems.add(f"{where}: cannot tell the layout from the keys {_keys(value) or '(none)'}; expected one of "
                             f'chat {{"messages": [...]}}, alpaca {{"instruction", "input" (optional), "output"}}, '
                             f'prompt_completion {{"{prompt_column}", "{completion_column}"}}: fix the rows, or set '
                             "`data.layout` (and `data.prompt_column` / `data.completion_column`)")
                break
        messages = _LAYOUTS[layout](value, where, problems, columns)
        if messages is None:
            continue
        if system_prompt is not None and all(m["role"] != "system" for m in messages):
            messages.insert(0, {"role": "system", "content": _lf(system_prompt), "weight": 0})
        rows.append({"id": _example_id(messages), "messages": messages, "line": line})
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


def _read_text(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found (relative paths are relative to the config file's folder)")
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"{path}: generation data must be JSON Lines (.jsonl) or a JSON list (.json), "
                        f"not {path.suffix or '(no extension)'!r}; convert the file or rename it")
    text = decode(path.read_bytes(), path, encoding)
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


def _chat(row: dict, where: str, problems: Problems, columns: tuple[str, str]) -> list[dict] | None:
    tools = {"tools", "functions", "parallel_tool_calls"} & set(row)
    ok = _only_keys(row, ("messages",), f"{where}: chat row has", problems, " (tools are not supported)" if tools else "")
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


def _alpaca(row: dict, where: str, problems: Problems, columns: tuple[str, str]) -> list[dict] | None:
    ok = _only_keys(row, ALPACA_KEYS, f"{where}: alpaca row has", problems)
    instruction = _field(row, "instruction", where, problems)
    extra = _field(row, "input", where, problems, required=False)
    output = _field(row, "output", where, problems, nonempty=True)
    if not ok or instruction is None or extra is None or output is None:
        return None
    prompt = instruction + "\n\n" + extra if extra else instruction
    return [{"role": "user", "content": _lf(prompt), "weight": 0}, {"role": "assistant", "content": _lf(output), "weight": 1}]


def _prompt_completion(row: dict, where: str, problems: Problems, columns: tuple[str, str]) -> list[dict] | None:
    prompt_column, completion_column = columns
    ok = _only_keys(row, columns, f"{where}: prompt_completion row has", problems,
                    " (set `data.prompt_column` / `data.completion_column` if your keys differ)")
    prompt = _field(row, prompt_column, where, problems)
    completion = _field(row, completion_column, where, problems, nonempty=True)
    if not ok or prompt is None or completion is None:
        return None
    return [{"role": "user", "content": _lf(prompt), "weight": 0}, {"role": "assistant", "content": _lf(completion), "weight": 1}]


def _field(row: dict, key: str, where: str, problems: Problems, required: bool = True, nonempty: bool = False) -> str | None:
    """The string at ``key`` ("" when optional and absent), or None after adding a problem."""
    if key not in row:
        if not required:
            return ""
        problems.add(f'{where}: "{key}" is missing; add it as a string')
        return None
    value = row[key]
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
