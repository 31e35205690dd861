"""A user's suite of behavioural test cases: the sentences a model must get right, in a YAML file.

Aggregate metrics can rise while the one request a team cares about breaks. A suite pins those
requests down the way unit tests pin down code (CheckList's MFT and INV tests): a model that
fails a case is wrong on something a person decided matters, whatever its F1. The format:

.. code-block:: yaml

    cases:
      - name: card not arrived
        must_predict: card_arrival          # every text must get this label
        texts: ["my card still hasn't come", "where is my card?"]
      - name: not a refund
        must_not_predict: request_refund    # no text may get this label
        texts: ["I love the app"]
      - name: polite variants agree
        invariant_pairs:                    # both texts of each pair must get the same label
          - ["cancel my transfer", "please cancel my transfer"]

Each case has a ``name`` and exactly one of ``must_predict``, ``must_not_predict`` (both with a
non-empty ``texts``) or ``invariant_pairs``. ``load_suite`` reports every problem in the file at
once, each with its line, case and field; a case passes only when every text (or pair) passes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunekit.errors import ConfigError

__all__ = ["Case", "load_suite", "run_suite"]

KINDS = ("must_predict", "must_not_predict", "invariant_pairs")


class Case(BaseModel):
    """One behavioural test case of a suite file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="What the case checks, shown in the report.")
    must_predict: str | None = Field(None, description="Every text must be predicted as this label.")
    must_not_predict: str | None = Field(None, description="No text may be predicted as this label.")
    texts: list[str] = Field(default_factory=list, description="The texts of a must_predict or must_not_predict case.")
    invariant_pairs: list[tuple[str, str]] | None = Field(None, description="Pairs of texts that must get the same label.")

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)


def load_suite(path: Path, labels: list[str]) -> list[Case]:
    """Read and check a suite file against the task's labels; one ``ConfigError`` lists every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: suite file not found")
    root, raw = _read_yaml(path)
    if not isinstance(raw, dict) or set(raw) != {"cases"} or not isinstance(raw["cases"], list) or not raw["cases"]:
        found = f"keys {', '.join(map(str, raw))}" if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"{path}: a suite file is a mapping with one key, `cases`, holding a non-empty list of cases, "
                          f"got {found} (the format is in the docstring of tunekit.evaluate.suite)")
    nodes = _case_nodes(root)
    cases, problems = [], []
    for i, item in enumerate(raw["cases"]):
        node = nodes[i] if i < len(nodes) else None
        own = [(_line_of(node, field.split(".")[0].split("[")[0]), field, message)
               for field, message in _case_problems(item, labels, cases)]
        for line, field, message in sorted(own, key=lambda problem: problem[0] or 0):
            where = ": ".join(part for part in (f"line {line}" if line else "", _case_label(i, item), field) if part)
            problems.append(f"  {where}: {message}")
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s) in the suite:\n" + "\n".join(problems))
    return cases


def _read_yaml(path: Path) -> tuple[yaml.Node | None, object]:
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def _case_problems(item: object, labels: list[str], cases: list[Case]) -> list[tuple[str, str]]:
    """``(field, message)`` for each problem of one case; a valid case is appended to ``cases``."""
    if not isinstance(item, dict):
        return [("", f"must be a mapping with name, texts and one of {', '.join(KINDS)}, got {type(item).__name__}")]
    try:
        case = Case.model_validate(item)
    except ValidationError as exc:
        return list(dict.fromkeys(_pydantic_problem(err) for err in exc.errors()))
    problems = _structure_problems(case)
    for field in ("must_predict", "must_not_predict"):
        label = getattr(case, field)
        if label is not None and label not in labels:
            problems.append((field, _unknown_label(label, labels)))
    if not problems:
        cases.append(case)
    return problems


def _structure_problems(case: Case) -> list[tuple[str, str]]:
    """Exactly one kind per case, and texts where (and only where) that kind reads them."""
    kinds = [k for k in KINDS if getattr(case, k) is not None]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        return [("/".join(KINDS), f"a case needs exactly one of these ({found})")]
    problems = []
    if kinds[0] == "invariant_pairs":
        if not case.invariant_pairs:
            problems.append(("invariant_pairs", "is empty; list at least one pair of texts"))
        if case.texts:
            problems.append(("texts", "is not used by an invariant_pairs case; put the texts into the pairs"))
        return problems
    if not case.texts:
        problems.append(("texts", f"is empty or missing; a {kinds[0]} case needs at least one text"))
    problems += [(f"texts[{i}]", "is an empty text") for i, t in enumerate(case.texts) if not t.strip()]
    return problems


def _unknown_label(label: str, labels: list[str]) -> str:
    close = difflib.get_close_matches(label, labels, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(labels[:8]) + (f", ... ({len(labels)} in all)" if len(labels) > 8 else "")
    return f"unknown label {label!r}{hint} (valid labels: {shown})"


def _case_label(i: int, item: object) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"cases[{i}] {name!r}" if isinstance(name, str) and name else f"cases[{i}]"


def _pydantic_problem(err: dict) -> tuple[str, str]:
    """``(YAML path, message)`` for one pydantic error, in the words a suite author uses."""
    loc = err["loc"]
    if loc[0] == "invariant_pairs" and len(loc) >= 2 and err["type"] in ("missing", "too_long", "too_short"):
        return _dotted(loc[:2]), "a pair needs exactly 2 texts"
    if err["type"] == "extra_forbidden":
        return _dotted(loc), f"unknown key; valid keys: {', '.join(Case.model_fields)}"
    if err["type"] == "missing":
        return _dotted(loc), "required, but missing"
    return _dotted(loc), f"{err['msg']}, got {err['input']!r}"


def _dotted(loc: tuple) -> str:
    """pydantic's ``('invariant_pairs', 0)`` as the YAML path ``invariant_pairs[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _case_nodes(root: yaml.Node | None) -> list[yaml.Node]:
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "cases" and isinstance(value, yaml.SequenceNode):
                return list(value.value)
    return []


def _line_of(node: yaml.Node | None, field: str) -> int | None:
    """The line of ``field``'s key in a case, else of the case itself."""
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            if key.value == field:
                return key.start_mark.line + 1
    return node.start_mark.line + 1 if node is not None else None


def run_suite(cases: list[Case], predict: Callable[[list[str]], list[str]]) -> dict:
    """Pass/fail per case, with each failing text and what was predicted for it.

    ``predict`` maps texts to label names. Every text of the suite goes through it in one call, so
    a real model batches them instead of being called once per case.
    """
    texts = list(dict.fromkeys(t for case in cases for t in _texts_of(case)))
    predicted = [str(p) for p in predict(texts)] if texts else []
    if len(predicted) != len(texts):
        raise ValueError(f"predict returned {len(predicted)} labels for {len(texts)} texts")
    by_text = dict(zip(texts, predicted))
    results = [_run_case(case, by_text) for case in cases]
    passed = sum(r["passed"] for r in results)
    return {"passed": passed, "failed": len(results) - passed,
            "pass_rate": passed / len(results) if results else 0.0, "cases": results}


def _texts_of(case: Case) -> list[str]:
    return [t for pair in case.invariant_pairs for t in pair] if case.kind == "invariant_pairs" else case.texts


def _run_case(case: Case, by_text: dict[str, str]) -> dict:
    if case.kind == "invariant_pairs":
        failures = [{"texts": [a, b], "predicted": [by_text[a], by_text[b]]}
                    for a, b in case.invariant_pairs if by_text[a] != by_text[b]]
        n = len(case.invariant_pairs)
    else:
        ok = (lambda p: p == case.must_predict) if case.kind == "must_predict" else (lambda p: p != case.must_not_predict)
        failures = [{"text": t, "predicted": by_text[t]} for t in case.texts if not ok(by_text[t])]
        n = len(case.texts)
    return {"name": case.name, "kind": case.kind, "label": case.must_predict or case.must_not_predict,
            "passed": not failures, "n": n, "failures": failures}
