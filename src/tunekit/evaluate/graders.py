"""Graders: OpenAI's grader definitions (as used by ``/v1/evals`` testing criteria), checked up
front and applied to one item at a time.

A grader definition is a JSON object with a ``type``; ``KINDS`` holds one row per type, with the
fields it takes, how to check a definition and how to grade one item:

- ``string_check``: ``input`` against ``reference`` by ``operation``: ``eq`` (equal), ``ne`` (not
  equal), ``like`` (input contains reference) or ``ilike`` (the same, ignoring case). Score 1 or 0.
- ``text_similarity``: ``input`` against ``reference`` by ``evaluation_metric``, passing at
  ``pass_threshold``. ``bleu`` and ``rouge_l`` are exactly ``tunekit eval``'s (``textgen``: sacrebleu
  sentence BLEU with effective order, rouge-score ROUGE-L F1, stemming off); ``rouge_1``..``rouge_5``
  are rouge-score's ROUGE-N F1 with the same settings; ``gleu`` is nltk's sentence GLEU (nltk comes
  with rouge-score) on whitespace tokens; ``fuzzy_match`` is rapidfuzz's ``fuzz.ratio`` / 100 (the
  normalised Indel similarity). ``meteor`` (needs the WordNet corpus, a download) and ``cosine``
  (needs an embedding model) are not offered.
- ``label_model``: a served model answers the ``input`` messages; the answer must be one of
  ``labels`` and passes when it is in ``passing_labels``.
- ``score_model``: a served model answers the ``input`` messages with a number in ``range``
  (default ``[0, 1]``), passing at ``pass_threshold`` (default: the middle of the range).
- ``python``: ``source`` defines ``grade(sample, item) -> float``. Off unless the caller allows it;
  then it runs in a separate Python process (``python -I``, an empty environment, a temporary
  working directory, an address-space limit and a wall-clock timeout), never in the caller. This
  isolates the caller from the grader's crashes, loops and memory; it is *not* a security sandbox
  (the code can read what the server's user can read), so allow it only for trusted key holders.
  Passes at ``pass_threshold`` (default 0.5).

Templates: ``{{item.field}}`` and ``{{sample.output_text}}`` (dotted paths, list indices as
numbers: ``{{item.answers.0}}``) are replaced in ``input``, ``reference`` and model messages; a
string stays a string, anything else is written as JSON. A reference to a missing field is an
error for that item, naming the field.

``grade(definition, item, sample, complete=None, allow_python=False)`` never raises for a problem
with one item (a missing field, a judge model's unusable answer, a grader that crashes or times
out): it returns a ``GradeResult`` with ``error`` set, score 0 and ``passed`` False. Invalid
*definitions* raise ``GraderDefinitionError`` (400, naming the field) from ``validate``.

``complete(model, messages, params)`` is the judge: ``messages`` is ``[{"role", "content": str}]``,
``params`` the grader's sampling parameters; it returns the answer's text (or a mapping with
``text`` and optionally ``prompt_tokens``/``completion_tokens``).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tunekit.grader_definitions import (
    SPECS,
    STRING_CHECK_OPERATIONS,
    TEXT_SIMILARITY_METRICS,
    UNSUPPORTED_METRICS,
    GraderDefinitionError,
    ItemError,
    check_message,
    lookup,
    render,
    template_refs,
    validate,
    validate_all,
)

__all__ = [  # the definitions' names are re-exported from tunekit.grader_definitions
    "KINDS",
    "STRING_CHECK_OPERATIONS",
    "TEXT_SIMILARITY_METRICS",
    "UNSUPPORTED_METRICS",
    "GradeResult",
    "GraderDefinitionError",
    "ItemError",
    "Usage",
    "check_message",
    "grade",
    "lookup",
    "render",
    "template_refs",
    "validate",
    "validate_all",
]

Complete = Callable[[str, list[dict], dict], Any]

PYTHON_TIMEOUT_S = 10.0
PYTHON_MEMORY_BYTES = 1 << 30  # address space of the grader's process


@dataclass(frozen=True)
class Usage:
    """One call to a judge model (token counts may be estimates: 4 characters a token)."""

    model: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class GradeResult:
    """One grader's verdict on one item. ``error`` set means the grader could not grade it."""

    name: str
    type: str
    score: float
    passed: bool
    error: str | None = None
    sample: dict | None = None  # a model grader's own prompt and answer
    usage: tuple[Usage, ...] = field(default=())

    def to_json(self) -> dict:
        """The entry of an output item's ``results`` (OpenAI's shape, plus ``error``)."""
        return {"name": self.name, "type": self.type, "score": self.score, "passed": self.passed,
                "sample": self.sample, "error": self.error}


# ---------------------------------------------------------------------------------------- grading

def grade(definition: dict, item: Mapping | None, sample: Mapping | None, complete: Complete | None = None,
          allow_python: bool = False, python_timeout_s: float = PYTHON_TIMEOUT_S,
          python_memory_bytes: int = PYTHON_MEMORY_BYTES) -> GradeResult:
    """Grade one item with one (already validated, or validated here) grader definition; never raises for
    a problem of this item: the result's ``error`` says what went wrong."""
    definition = validate(definition)
    name, kind_name = definition["name"], definition["type"]
    ctx = {"complete": complete, "allow_python": allow_python, "timeout": python_timeout_s, "memory": python_memory_bytes}
    try:
        score, passed, judge_sample, usage = KINDS[kind_name].grade(definition, item, sample, ctx)
    except ItemError as exc:
        return GradeResult(name, kind_name, 0.0, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a judge model that failed, a metric library's surprise: this item only
        return GradeResult(name, kind_name, 0.0, False, f"{type(exc).__name__}: {exc}")
    return GradeResult(name, kind_name, float(score), bool(passed), None, judge_sample, usage)


def _grade_string_check(d: dict, item, sample, ctx) -> tuple:
    text, ref = render(d["input"], item, sample), render(d["reference"], item, sample)
    op = d["operation"]
    ok = {"eq": text == ref, "ne": text != ref, "like": ref in text, "ilike": ref.lower() in text.lower()}[op]
    return (1.0 if ok else 0.0), ok, None, ()


def _grade_text_similarity(d: dict, item, sample, ctx) -> tuple:
    text, ref = render(d["input"], item, sample), render(d["reference"], item, sample)
    score = similarity(d["evaluation_metric"], text, ref)
    return score, score >= d["pass_threshold"], None, ()


def similarity(metric: str, text: str, reference: str) -> float:
    """``text`` scored against ``reference`` by one of ``TEXT_SIMILARITY_METRICS``, in [0, 1]."""
    if metric in ("bleu", "rouge_l"):
        from tunekit.evaluate.textgen import per_example

        return float(per_example([text], [reference])[metric][0])
    if metric.startswith("rouge_"):
        key = "rouge" + metric.split("_")[1]
        return float(_rouge_n().score(reference, text)[key].fmeasure)
    if metric == "fuzzy_match":
        try:
            from rapidfuzz import fuzz
        except ImportError:
            raise ItemError("fuzzy_match needs the rapidfuzz package: pip install rapidfuzz") from None
        return float(fuzz.ratio(text, reference) / 100)
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        hyp, ref = text.split(), reference.split()
        return float(sentence_gleu([ref], hyp)) if hyp and ref else float(hyp == ref)
    raise ValueError(f"unknown metric {metric!r}; supported: {', '.join(TEXT_SIMILARITY_METRICS)}")


@lru_cache(maxsize=1)
def _rouge_n():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([f"rouge{n}" for n in range(1, 6)], use_stemmer=False)


def render_messages(messages: list[dict], item: Mapping | None, sample: Mapping | None) -> list[dict]:
    """Chat messages with templates filled and content made one string (text parts joined by newlines)."""
    out = []
    for message in messages:
        content = message["content"]
        parts = content if isinstance(content, list) else [content]
        texts = [p if isinstance(p, str) else p.get("text", "") for p in parts]
        out.append({"role": message["role"], "content": "\n".join(render(t, item, sample) for t in texts)})
    return out


def call_model(complete: Complete | None, model: str, messages: list[dict], params: dict) -> tuple[str, Usage]:
    """The model's answer and its usage (estimated at 4 characters a token when ``complete`` gives only text)."""
    if complete is None:
        raise ItemError(f"model {model!r}: this grader needs a served model to judge, and none was given")
    answer = complete(model, messages, params)
    prompt_tokens = completion_tokens = None
    if isinstance(answer, Mapping):
        prompt_tokens, completion_tokens = answer.get("prompt_tokens"), answer.get("completion_tokens")
        answer = answer.get("text", answer.get("content"))
    if not isinstance(answer, str):
        raise ItemError(f"model {model!r} gave no text answer")
    if prompt_tokens is None:
        prompt_tokens = estimate_tokens(" ".join(m["content"] for m in messages))
    if completion_tokens is None:
        completion_tokens = estimate_tokens(answer)
    return answer, Usage(model, int(prompt_tokens), int(completion_tokens))


def estimate_tokens(text: str) -> int:
    """A token count estimate: 4 characters a token (rounded up)."""
    return -(-len(text) // 4)


def _judge(d: dict, item, sample, ctx, instruction: str) -> tuple[str, dict, Usage]:
    messages = render_messages(d["input"], item, sample) + [{"role": "system", "content": instruction}]
    params = dict(d.get("sampling_params") or {})
    if "max_completions_tokens" in params:  # OpenAI's grader field has this spelling
        params["max_completion_tokens"] = params.pop("max_completions_tokens")
    answer, usage = call_model(ctx["complete"], d["model"], messages, params)
    judge_sample = {"input": messages, "output": [{"role": "assistant", "content": answer}], "model": d["model"]}
    return answer, judge_sample, usage


def _grade_label_model(d: dict, item, sample, ctx) -> tuple:
    labels = d["labels"]
    answer, judge_sample, usage = _judge(d, item, sample, ctx, "Answer with exactly one of these labels and nothing else: "
                                         + ", ".join(labels))
    label = parse_label(answer, labels)
    judge_sample["label"] = label
    passed = label in d["passing_labels"]
    return (1.0 if passed else 0.0), passed, judge_sample, (usage,)


def parse_label(answer: str, labels: list[str]) -> str:
    """The label a judge's answer gives: JSON ``{"label": ...}``, the answer itself (ignoring case,
    quotes and a final full stop), or the only label named in it as a word; else ``ItemError``."""
    text = answer.strip()
    try:
        parsed = json.loads(text)
        if isinstance(parsed, Mapping) and isinstance(parsed.get("label"), str):
            text = parsed["label"].strip()
    except ValueError:
        pass
    folded = {label.lower(): label for label in labels}
    bare = text.strip("\"'`*. \n").lower()
    if bare in folded:
        return folded[bare]
    named = [label for label in labels if re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", text.lower())]
    if len(named) == 1:
        return named[0]
    raise ItemError(f"the judge's answer {_clip(answer)!r} is not one of the labels {', '.join(labels)}")


def _grade_score_model(d: dict, item, sample, ctx) -> tuple:
    low, high = d.get("range") or [0, 1]
    answer, judge_sample, usage = _judge(d, item, sample, ctx, f"Answer with only a number from {low:g} to {high:g}.")
    score = parse_score(answer)
    if not low <= score <= high:
        raise ItemError(f"the judge's score {score:g} is outside the range [{low:g}, {high:g}]")
    threshold = d.get("pass_threshold")
    threshold = (low + high) / 2 if threshold is None else threshold
    judge_sample["score"] = score
    return score, score >= threshold, judge_sample, (usage,)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_score(answer: str) -> float:
    """A judge's number: JSON ``{"result"|"score": n}``, or the first number in the text; else ``ItemError``."""
    text = answer.strip()
    try:
        parsed = json.loads(text)
        if isinstance(parsed, Mapping):
            parsed = parsed.get("result", parsed.get("score"))
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and math.isfinite(parsed):
            return float(parsed)
    except ValueError:
        pass
    match = _NUMBER.search(text)
    if match is None:
        raise ItemError(f"the judge's answer {_clip(answer)!r} holds no number")
    return float(match.group())


def _clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."


# The child process: limits first, then the grader's code, then one JSON line on stdout.
_RUNNER = r"""
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
cpu = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
payload = json.loads(sys.stdin.read())
namespace = {"__name__": "grader"}
exec(compile(payload["source"], "<grader>", "exec"), namespace)
score = namespace["grade"](payload["sample"], payload["item"])
sys.stdout.write("\n" + json.dumps({"score": score}))
"""


def _grade_python(d: dict, item, sample, ctx) -> tuple:
    if not ctx["allow_python"]:
        raise ItemError("python graders are turned off on this server (they run submitted code); an admin can enable them")
    score = run_python(d["source"], item, sample, ctx["timeout"], ctx["memory"])
    threshold = d.get("pass_threshold")
    return score, score >= (0.5 if threshold is None else threshold), None, ()


def run_python(source: str, item: Any, sample: Any, timeout_s: float = PYTHON_TIMEOUT_S,
               memory_bytes: int = PYTHON_MEMORY_BYTES) -> float:
    """``grade(sample, item)`` from ``source``, run in a fresh ``python -I`` process with ``memory_bytes``
    of address space and ``timeout_s`` of wall-clock time; ``ItemError`` on any failure."""
    payload = json.dumps({"source": source, "item": item, "sample": sample}, default=str)
    with tempfile.TemporaryDirectory(prefix="tunekit-grader-") as cwd:
        proc = subprocess.Popen([sys.executable, "-I", "-c", _RUNNER, str(memory_bytes), str(max(1, math.ceil(timeout_s)))],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                                env={"PATH": os.defpath, "LANG": "C.UTF-8"}, start_new_session=True, text=True)
        try:
            out, err = proc.communicate(payload, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise ItemError(f"the python grader did not finish within {timeout_s:g} s") from None
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
    if proc.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode < 0:
            last = f"killed by signal {signal.Signals(-proc.returncode).name}" + (
                " (CPU time limit)" if -proc.returncode == signal.SIGXCPU else "")
        if "MemoryError" in last:
            last += f" (the grader may use {memory_bytes / 2**20:.0f} MiB)"
        raise ItemError(f"the python grader failed: {_clip(last, 500)}")
    try:
        score = json.loads(out.rstrip().rsplit("\n", 1)[-1])["score"]
    except (ValueError, KeyError, IndexError):
        raise ItemError("the python grader printed no score") from None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ItemError(f"grade() must return a finite number, returned {_clip(repr(score))}")
    return float(score)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the grader's own children too (start_new_session made the group)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class Kind:
    """One grader type: its fields (required, optional), its own checks, and how it grades one item."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    check: Callable[[dict, str], None]
    grade: Callable[..., tuple[float, bool, dict | None, tuple[Usage, ...]]]


_GRADE = {"string_check": _grade_string_check, "text_similarity": _grade_text_similarity, "label_model": _grade_label_model,
          "score_model": _grade_score_model, "python": _grade_python}
KINDS: dict[str, Kind] = {name: Kind(spec.required, spec.optional, spec.check, _GRADE[name]) for name, spec in SPECS.items()}


def read_grader_file(path: Path, judge: bool = False) -> tuple[list[dict], list[float | None]]:
    """The definitions of a grader file (a list, or ``{graders: [...]}``; an entry may be ``{grader: {...},
    min_pass_rate: N}`` as in ``gate.graders``), checked, with errors naming the file and field, and each
    one's min_pass_rate (or None). Model graders (``label_model``, ``score_model``) only where a ``judge``
    model will answer them (``tunekit monitor --judge``); ``tunekit eval`` has none."""
    import yaml

    from tunekit.errors import TunekitError

    path = Path(path).expanduser()
    if not path.is_file():
        raise TunekitError(f"{path}: grader file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
    except yaml.YAMLError as exc:
        raise TunekitError(f"{path}: not valid YAML or JSON: {getattr(exc, 'problem', exc)}") from None
    where = "graders"
    if isinstance(raw, dict) and "graders" in raw:
        raw = raw["graders"]
    if not isinstance(raw, list) or not raw:
        raise TunekitError(f"{path}: expected a non-empty list of grader definitions, or {{graders: [...]}}")
    definitions, minimums, names = [], [], set()
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        minimum = None
        if isinstance(entry, dict):
            entry = dict(entry)
            minimum = entry.pop("min_pass_rate", None)
            if "grader" in entry:  # gate.graders' shape
                extra = sorted(set(entry) - {"grader"})
                if extra:
                    raise TunekitError(f"{path}: {at}.{extra[0]}: unknown field; an entry is {{grader: {{...}}, min_pass_rate: N}}")
                entry, at = entry["grader"], f"{at}.grader"
        if minimum is not None and (isinstance(minimum, bool) or not isinstance(minimum, (int, float)) or not 0 <= minimum <= 1):
            raise TunekitError(f"{path}: {where}[{i}].min_pass_rate: must be a number from 0 to 1, got {minimum!r}")
        try:
            d = validate(entry, at)
        except GraderDefinitionError as exc:
            raise TunekitError(f"{path}: {exc}") from None
        if d["type"] in ("label_model", "score_model") and not judge:
            raise TunekitError(f"{path}: {at}.type: a {d['type']} grader needs a served judge model, which tunekit eval does not call; "
                               "use the evals API (tunekit serve --service) or tunekit monitor --judge for model graders")
        if d["name"] in names:
            raise TunekitError(f"{path}: {at}.name: {d['name']!r} is also the name of an earlier grader; give each its own name")
        names.add(d["name"])
        definitions.append(d)
        minimums.append(minimum)
    return definitions, minimums
