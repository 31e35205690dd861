"""Grader pass rates of a run's test answers: ``gate.graders`` at promotion and ``tunekit eval RUN --graders FILE``.

The answers come from the run folder, so a finished run can be graded again with other definitions:

- generation: ``predictions.jsonl``, one line per scored test row with ``id``, ``prompt`` (the last
  user turn), ``reference``, ``fine_tuned`` and one key per baseline (``zero_shot``, ``few_shot``...).
  The item is ``{id, prompt, reference}``; at promotion the gate also adds the row's ``messages``
  (the conversation up to the answer) and its metadata columns (``item.channel``), which a run
  folder alone does not hold.
- preference: the side-by-side rows (``eval.side_by_side`` test pairs answered by both models):
  the item is ``{prompt, reference, preferred, non_preferred}`` with the preferred answer as ``reference``.

Each answer is ``sample = {"output_text": answer}``. A grader's pass rate is the share of items it
passes; an item it cannot grade (a missing field) counts as failed and is listed with its error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunekit.evaluate.graders import grade
from tunekit.task_kinds import kind

__all__ = ["FINE_TUNED", "Answered", "answered_rows", "for_gate", "pass_rates"]

FINE_TUNED = "fine_tuned"
_FIXED = ("id", "prompt", "reference", FINE_TUNED)
FAILURES_KEPT = 5


@dataclass(frozen=True)
class Answered:
    """One test item and each model's answer to it (``fine_tuned`` first, then the baselines)."""

    item: dict
    answers: dict[str, str]


def answered_rows(run_dir: Path, task: str, analysis: dict | None = None, test_rows: list[dict] | None = None) -> list[Answered]:
    """The run's graded items: generation from ``predictions.jsonl`` (``test_rows``, the frozen test split,
    add messages and metadata by id), preference from the side-by-side rows of ``analysis``."""
    if kind(task).paired:  # pairs decode only their side-by-side rows
        side = (analysis or {}).get("side_by_side") or []
        return [Answered({"prompt": r["prompt"], "reference": r["preferred"], "preferred": r["preferred"],
                          "non_preferred": r["non_preferred"]}, {FINE_TUNED: r["fine_tuned"], "baseline": r["baseline"]}) for r in side]
    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions to grade (the run did not finish its evaluation)")
    extra = {row["id"]: _extra(row) for row in test_rows or []}
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        item = {"id": row.get("id"), "prompt": row.get("prompt"), "reference": row.get("reference"), **extra.get(row.get("id"), {})}
        answers = {FINE_TUNED: row.get(FINE_TUNED, "")}
        answers.update({k: v for k, v in row.items() if k not in _FIXED and isinstance(v, str)})
        out.append(Answered(item, answers))
    return out


def _extra(row: dict) -> dict:
    """A test row's conversation up to its last assistant turn, and its metadata columns by their own names."""
    from tunekit.data.conversations import prompt_and_reference
    from tunekit.data.validate import META_PREFIX

    out = {k[len(META_PREFIX):]: v for k, v in row.items() if k.startswith(META_PREFIX)}
    if "messages" in row:
        out["messages"] = prompt_and_reference(row)[0]
    return out


def pass_rates(definitions: list[dict], rows: list[Answered], allow_python: bool = False) -> list[dict]:
    """Per grader (in order): ``{"name", "type", "models": {model: {"passed", "total", "rate", "errors"}},
    "failures": [the fine-tuned model's first failed items]}``."""
    out = []
    for d in definitions:
        models: dict[str, dict] = {}
        failures = []
        for row in rows:
            for model, answer in row.answers.items():
                r = grade(d, row.item, {"output_text": answer}, allow_python=allow_python)
                m = models.setdefault(model, {"passed": 0, "total": 0, "errors": 0})
                m["total"] += 1
                m["passed"] += r.passed
                m["errors"] += r.error is not None
                if model == FINE_TUNED and not r.passed and len(failures) < FAILURES_KEPT:
                    failures.append({"id": row.item.get("id"), "prompt": row.item.get("prompt"), "reference": row.item.get("reference"),
                                     "answer": answer, "score": r.score, "error": r.error})
        for m in models.values():
            m["rate"] = m["passed"] / m["total"] if m["total"] else 0.0
        out.append({"name": d.get("name", d["type"]), "type": d["type"], "models": models, "failures": failures})
    return out


def for_gate(cfg, data, run_dir: Path, analysis: dict) -> list[dict]:
    """``gate.graders`` on the run's test answers (each result with its ``min_pass_rate``), for the
    evaluation's ``analysis["gate_graders"]``, which the gate decides on; empty without graders."""
    if not cfg.gate.graders:
        return []
    rows = answered_rows(run_dir, cfg.task, analysis, getattr(data, "test", None))
    results = pass_rates([g.grader for g in cfg.gate.graders], rows)
    return [{**r, "min_pass_rate": g.min_pass_rate} for g, r in zip(cfg.gate.graders, results)]
