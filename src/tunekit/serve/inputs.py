"""Turn a request's ``inputs`` into the texts (and text pairs) the model predicts on.

Every problem is a ``RequestError`` naming the item (``inputs[2]: empty text``): 422 when the
request is malformed, 413 when it exceeds ``max_inputs`` or ``max_chars``. Nothing is silently
dropped or truncated.
"""

from __future__ import annotations

from typing import Any

from tunekit.errors import RequestError

SHAPES = 'a string, a [text, text_pair] pair or a {"text": ..., "text_pair": ...} object'


def parse_inputs(raw: Any, expects_pairs: bool, max_inputs: int, max_chars: int) -> tuple[list[str], list[str] | None]:
    """(texts, pairs) in input order; pairs is None for a single-text model."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise RequestError(f"inputs: expected a string or a list of inputs, got {type_name(raw)}", "invalid_type")
    if not items:
        raise RequestError("inputs: empty list; send at least one text", "empty_inputs")
    if len(items) > max_inputs:
        raise RequestError(
            f"inputs: {len(items)} items, more than the limit of {max_inputs} per request (setting max_inputs, "
            f"--max-inputs); split the request or restart the server with a higher --max-inputs",
            "too_many_inputs", http_status=413,
        )
    where = (lambda i: f"inputs[{i}]") if isinstance(raw, list) else (lambda i: "inputs")
    rows = [_parse_item(item, where(i), expects_pairs, max_chars) for i, item in enumerate(items)]
    texts = [text for text, _ in rows]
    return texts, ([pair for _, pair in rows] if expects_pairs else None)


def _parse_item(item: Any, where: str, expects_pairs: bool, max_chars: int) -> tuple[str, str | None]:
    if isinstance(item, str):
        text, pair, parts = item, None, [(where, item)]
    elif isinstance(item, list) and len(item) == 2:
        text, pair, parts = item[0], item[1], [(f"{where}[0]", item[0]), (f"{where}[1]", item[1])]
    elif isinstance(item, dict) and "text" in item and set(item) <= {"text", "text_pair"}:
        text, pair = item["text"], item.get("text_pair")
        parts = [(f"{where}.{key}", item[key]) for key in ("text", "text_pair") if key in item]
    else:
        raise RequestError(f"{where}: expected {SHAPES}, got {describe_value(item)}", "invalid_type", where)
    _check_kind(pair is not None or isinstance(item, list), where, expects_pairs)
    for param, value in parts:
        _check_text(value, param, max_chars)
    return text, pair


def _check_kind(is_pair: bool, where: str, expects_pairs: bool) -> None:
    if is_pair and not expects_pairs:
        raise RequestError(f"{where}: got a text pair, but this model classifies single texts; send each input as one string", "pair_not_expected", where)
    if not is_pair and expects_pairs:
        raise RequestError(
            f"{where}: got a single text, but this model classifies sentence pairs; send each input as a [text, text_pair] pair "
            'or a {"text": ..., "text_pair": ...} object', "pair_expected", where,
        )


def _check_text(value: Any, param: str, max_chars: int) -> None:
    if not isinstance(value, str):
        raise RequestError(f"{param}: expected a string, got {type_name(value)}", "invalid_type", param)
    check_strings(value, param)
    if not value.strip():
        raise RequestError(f"{param}: empty text", "empty_text", param)
    if len(value) > max_chars:
        raise RequestError(
            f"{param}: {len(value)} characters, more than the limit of {max_chars} per text (setting max_chars, --max-chars); "
            "shorten the text or restart the server with a higher --max-chars",
            "text_too_long", param, http_status=413,
        )


def check_strings(value: Any, param: str) -> None:
    """422 (``invalid_text``) naming the first string in ``value`` (any JSON value) that is not valid
    Unicode text: JSON's ``\\ud800`` escapes can carry a lone surrogate, which no tokenizer, log or
    answer can encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            where = param or "body"
            raise RequestError(f"{where}: character {exc.start} is a lone UTF-16 surrogate ({value[exc.start]!a}), which is not text; "
                               "send valid Unicode (a surrogate pair such as \\ud83d\\ude00 is fine)", "invalid_text", where) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_strings(key, param or "body")
            check_strings(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_strings(item, f"{param}[{i}]")


def describe_value(item: Any) -> str:
    """What ``item`` is, for a message: ``a list of 3 items``, ``an object with keys [...]``, ``a number``."""
    if isinstance(item, list):
        return f"a list of {len(item)} items"
    if isinstance(item, dict):
        return f"an object with keys {sorted(item)}"
    return type_name(item)


def type_name(value: Any) -> str:
    """The JSON type of ``value``, for a message: ``a string``, ``null``, ``an object``."""
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)
