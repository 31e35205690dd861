"""Grader definitions: OpenAI's grader objects (``/v1/evals`` testing criteria, ``gate.graders``)
checked up front, and the ``{{item.x}}`` / ``{{sample.y}}`` templates they fill.

This is the part of the graders that only reads a definition; grading itself (metrics, judge
models, python graders) is ``tunekit.evaluate.graders``, which re-exports everything here. It sits
at the bottom of the package, beside ``errors``, so that the config can check ``gate.graders``
with the very rules the evals API uses (``config`` cannot import ``evaluate``, which imports it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tunekit.errors import RequestError

__all__ = [
    "NAMESPACES",
    "PYTHON_SOURCE_MAX",
    "ROLES",
    "SPECS",
    "STRING_CHECK_OPERATIONS",
    "TEXT_SIMILARITY_METRICS",
    "UNSUPPORTED_METRICS",
    "GraderDefinitionError",
    "ItemError",
    "Spec",
    "check_message",
    "lookup",
    "render",
    "template_refs",
    "validate",
    "validate_all",
]

STRING_CHECK_OPERATIONS = ("eq", "ne", "like", "ilike")
TEXT_SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
UNSUPPORTED_METRICS = {"meteor": "needs the WordNet corpus, which tunekit does not download",
                       "cosine": "needs an embedding model, which tunekit's graders do not load"}
ROLES = ("user", "assistant", "system", "developer")
PYTHON_SOURCE_MAX = 256_000


class GraderDefinitionError(RequestError):
    """A grader definition is invalid: 400, ``param`` is the field at fault."""

    def __init__(self, message: str, param: str | None):
        super().__init__(message, "invalid_value", param, http_status=400)


class ItemError(Exception):
    """This item cannot be graded (its message becomes ``GradeResult.error``)."""


# ---------------------------------------------------------------------------------------- templates

_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*")
NAMESPACES = ("item", "sample")


def template_refs(text: str) -> list[str]:
    """The paths referenced in ``text`` (``item.question``, ``sample.output_text``)."""
    return [m.group(1) for m in _TEMPLATE.finditer(text)]


def _check_template(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise GraderDefinitionError(f"{where}: must be a string, got {_kind(text)}", where)
    for ref in template_refs(text):
        if not _PATH.fullmatch(ref) or ref.split(".")[0] not in NAMESPACES:
            raise GraderDefinitionError(f"{where}: template {{{{{ref}}}}} must name a field of `item` or `sample` "
                                        "(such as {{item.answer}} or {{sample.output_text}})", where)


def lookup(path: str, namespaces: Mapping[str, Any]) -> Any:
    """The value at a dotted ``path`` (``item.a.b``, ``item.list.0``); ``ItemError`` naming it when missing."""
    parts = path.split(".")
    if parts[0] not in namespaces or namespaces[parts[0]] is None:
        raise ItemError(f"{{{{{path}}}}}: there is no `{parts[0]}` for this item"
                        + (" (the run has no model output: use a completions data source or give `sample` in the data)"
                           if parts[0] == "sample" else ""))
    value = namespaces[parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            have = f"; it has {', '.join(map(str, value))}" if isinstance(value, Mapping) and value else ""
            raise ItemError(f"{{{{{path}}}}}: {'.'.join(parts[:i])} has no field {part!r}{have}")
    return value


def render(text: str, item: Mapping | None, sample: Mapping | None) -> str:
    """``text`` with each ``{{item.x}}`` / ``{{sample.y}}`` replaced (strings as they are, other values as JSON)."""
    namespaces = {"item": item, "sample": sample}

    def one(match: re.Match) -> str:
        value = lookup(match.group(1), namespaces)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _TEMPLATE.sub(one, text)


# ---------------------------------------------------------------------------------------- definitions

@dataclass(frozen=True)
class Spec:
    """One grader type's definition: its fields (required, optional) and its own checks."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    check: Callable[[dict, str], None]


def validate(definition: Any, where: str = "grader") -> dict:
    """The definition, checked (``GraderDefinitionError`` naming ``where.field``), with ``name``
    defaulting to the type. Raises for unknown types, fields and values."""
    if not isinstance(definition, Mapping):
        raise GraderDefinitionError(f"{where}: must be a JSON object with a `type`, got {_kind(definition)}", where)
    kind_name = definition.get("type")
    if kind_name not in SPECS:
        extra = " (multi graders are not supported)" if kind_name == "multi" else ""
        raise GraderDefinitionError(f"{where}.type: {kind_name!r} is not one of {', '.join(SPECS)}{extra}", f"{where}.type")
    kind = SPECS[kind_name]
    allowed = {"type", "name", *kind.required, *kind.optional}
    unknown = sorted(set(definition) - allowed)
    if unknown:
        raise GraderDefinitionError(f"{where}.{unknown[0]}: unknown field for a {kind_name} grader; it takes "
                                    f"{', '.join(sorted(allowed))}", f"{where}.{unknown[0]}")
    for name in kind.required:
        if definition.get(name) is None:
            raise GraderDefinitionError(f"{where}.{name}: required for a {kind_name} grader, but missing", f"{where}.{name}")
    out = dict(definition)
    name = out.get("name", kind_name)
    if not isinstance(name, str) or not name.strip():
        raise GraderDefinitionError(f"{where}.name: must be a non-empty string", f"{where}.name")
    out["name"] = name
    kind.check(out, where)
    return out


def validate_all(definitions: Any, where: str = "testing_criteria") -> list[dict]:
    """Every definition of a list checked (``testing_criteria[1].operation: ...``)."""
    if not isinstance(definitions, list) or not definitions:
        raise GraderDefinitionError(f"{where}: must be a non-empty list of graders", where)
    return [validate(d, f"{where}[{i}]") for i, d in enumerate(definitions)]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _number(definition: dict, key: str, where: str, required: bool = False) -> None:
    value = definition.get(key)
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GraderDefinitionError(f"{where}.{key}: must be a number, got {_kind(value)}", f"{where}.{key}")


def _check_string_check(d: dict, where: str) -> None:
    _check_template(d["input"], f"{where}.input")
    _check_template(d["reference"], f"{where}.reference")
    if d["operation"] not in STRING_CHECK_OPERATIONS:
        raise GraderDefinitionError(f"{where}.operation: {d['operation']!r} is not one of {', '.join(STRING_CHECK_OPERATIONS)}",
                                    f"{where}.operation")


def _check_text_similarity(d: dict, where: str) -> None:
    _check_template(d["input"], f"{where}.input")
    _check_template(d["reference"], f"{where}.reference")
    metric = d["evaluation_metric"]
    if metric not in TEXT_SIMILARITY_METRICS:
        why = f" ({metric} {UNSUPPORTED_METRICS[metric]})" if metric in UNSUPPORTED_METRICS else ""
        raise GraderDefinitionError(f"{where}.evaluation_metric: {metric!r} is not supported{why}; supported: "
                                    f"{', '.join(TEXT_SIMILARITY_METRICS)}", f"{where}.evaluation_metric")
    _number(d, "pass_threshold", where, required=True)


def _check_messages(d: dict, where: str) -> None:
    messages = d["input"]
    if not isinstance(messages, list) or not messages:
        raise GraderDefinitionError(f"{where}.input: must be a non-empty list of messages with `role` and `content`", f"{where}.input")
    for i, message in enumerate(messages):
        check_message(message, f"{where}.input[{i}]")
    if not isinstance(d["model"], str) or not d["model"]:
        raise GraderDefinitionError(f"{where}.model: must be the name of a served model", f"{where}.model")
    params = d.get("sampling_params")
    if params is not None and not isinstance(params, Mapping):
        raise GraderDefinitionError(f"{where}.sampling_params: must be an object", f"{where}.sampling_params")


def check_message(message: Any, where: str) -> None:
    """A chat message whose content is text (a string, ``input_text``/``output_text`` parts); used for
    graders' inputs and the completions data source's template."""
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
        raise GraderDefinitionError(f"{where}: must be an object with `role` and `content`", where)
    if message["role"] not in ROLES:
        raise GraderDefinitionError(f"{where}.role: {message['role']!r} is not one of {', '.join(ROLES)}", f"{where}.role")
    content = message["content"]
    parts = content if isinstance(content, list) else [content]
    for j, part in enumerate(parts):
        at = f"{where}.content" + (f"[{j}]" if isinstance(content, list) else "")
        if isinstance(part, str):
            _check_template(part, at)
        elif isinstance(part, Mapping) and part.get("type") in ("input_text", "output_text"):
            _check_template(part.get("text"), f"{at}.text")
        else:
            what = part.get("type") if isinstance(part, Mapping) else _kind(part)
            raise GraderDefinitionError(f"{at}: only text content is supported (a string, or input_text/output_text parts), "
                                        f"got {what!r}: images and audio are not", at)


def _check_label_model(d: dict, where: str) -> None:
    _check_messages(d, where)
    for key in ("labels", "passing_labels"):
        value = d[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise GraderDefinitionError(f"{where}.{key}: must be a non-empty list of strings", f"{where}.{key}")
    outside = [label for label in d["passing_labels"] if label not in d["labels"]]
    if outside:
        raise GraderDefinitionError(f"{where}.passing_labels: {outside[0]!r} is not one of labels ({', '.join(d['labels'])})",
                                    f"{where}.passing_labels")


def _check_score_model(d: dict, where: str) -> None:
    _check_messages(d, where)
    rng = d.get("range")
    numbers = isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
    if rng is not None and not (numbers and rng[0] < rng[1]):
        raise GraderDefinitionError(f"{where}.range: must be two numbers [low, high] with low < high, got {rng!r}", f"{where}.range")
    _number(d, "pass_threshold", where)


def _check_python(d: dict, where: str) -> None:
    source = d["source"]
    if not isinstance(source, str) or not source.strip():
        raise GraderDefinitionError(f"{where}.source: must be Python source defining grade(sample, item)", f"{where}.source")
    if len(source) > PYTHON_SOURCE_MAX:
        raise GraderDefinitionError(f"{where}.source: {len(source)} characters; the limit is {PYTHON_SOURCE_MAX}", f"{where}.source")
    try:
        compile(source, "<grader>", "exec")  # compiling runs nothing
    except SyntaxError as exc:
        raise GraderDefinitionError(f"{where}.source: not valid Python: {exc.msg} (line {exc.lineno})", f"{where}.source") from None
    if not re.search(r"^\s*(async\s+)?def\s+grade\s*\(", source, re.MULTILINE):
        raise GraderDefinitionError(f"{where}.source: must define a function grade(sample, item) returning a number", f"{where}.source")
    _number(d, "pass_threshold", where)


SPECS: dict[str, Spec] = {
    "string_check": Spec(("input", "reference", "operation"), (), _check_string_check),
    "text_similarity": Spec(("input", "reference", "evaluation_metric", "pass_threshold"), (), _check_text_similarity),
    "label_model": Spec(("input", "model", "labels", "passing_labels"), ("sampling_params",), _check_label_model),
    "score_model": Spec(("input", "model"), ("range", "sampling_params", "pass_threshold"), _check_score_model),
    "python": Spec(("source",), ("image_tag", "pass_threshold"), _check_python),
}
