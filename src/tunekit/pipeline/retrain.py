"""``tunekit retrain CONFIG --from-feedback``: production corrections back into training, through the gate.

The feedback a server collected (``POST /v1/feedback`` with the correct label or answer) becomes
training rows: the logged request's text (PII-redacted as it was logged) with the corrected label,
or the conversation with the corrected answer. They join the current training rows in a new dataset
version, deduplicated, and any of them whose text is in the frozen test split is left out (training
on test rows would inflate every score the gate reads). Validation and test rows stay exactly as
they were, so the new model is compared with the champion on identical test rows. Then the whole
pipeline runs; the new version becomes champion only through the gate, and the champion stays if
it fails.

With a ``task: preference`` config the feedback becomes preference pairs instead
(``data.feedback_pairs``): prompt = the logged request's messages, chosen = the corrected answer,
rejected = the model's logged answer. They join the training pairs, written in OpenAI's preference
format with their request and feedback ids under ``metadata``, and DPO (or ORPO) trains on them.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console

from tunekit import task_kinds
from tunekit.artifacts import Workspace
from tunekit.config import TunekitConfig
from tunekit.data.feedback_pairs import FeedbackPairs, pairs_from_feedback
from tunekit.data.multitask import feedback_label, label_name, task_of
from tunekit.errors import DataError

__all__ = ["FeedbackRows", "feedback_pairs", "feedback_rows", "retrain_from_feedback"]


@dataclass
class FeedbackRows:
    """Training rows made from feedback, and what was left out and why."""

    rows: list[dict]
    used: int
    duplicates: int
    in_test: int
    unusable: int
    skipped: dict[str, int] | None = None  # preference: feedback that made no pair, by reason (data.feedback_pairs)


def _read_feedback(serving_db: Path, since: float) -> list[dict]:
    from tunekit.serve.requestlog import RequestLog

    if not serving_db.is_file():
        raise DataError(f"{serving_db}: no request log; serve the model (tunekit serve) and collect feedback (POST /v1/feedback) first")
    log = RequestLog(serving_db)
    try:
        return log.feedback_since(since)
    finally:
        log.close()


def feedback_pairs(cfg: TunekitConfig, serving_db: Path, since: float = 0.0) -> FeedbackPairs:
    """Preference pairs from feedback on this model's chat answers (``data.feedback_pairs``): each
    with its request and feedback id, and the feedback that made none counted by reason."""
    return pairs_from_feedback(_read_feedback(serving_db, since), cfg.name)


def feedback_rows(cfg: TunekitConfig, serving_db: Path, since: float = 0.0) -> list[dict]:
    """Canonical rows from feedback on this model's requests: ``{text, label}`` (classification,
    regression; single-input requests only, since one correction cannot say which input it meant)
    or ``{messages}`` (generation)."""
    feedback = _read_feedback(serving_db, since)
    out = []
    task = task_kinds.kind(cfg.task)
    for fb in feedback:
        req = fb["request"]
        if req.get("model") != cfg.name or req.get("status") != 200:
            continue
        body = req.get("request") or {}
        if task.causal and fb.get("answer") and body.get("messages"):
            messages = [m for m in body["messages"] if m.get("role") in ("system", "user", "assistant")]
            out.append({"messages": [*messages, {"role": "assistant", "content": fb["answer"]}], "feedback_id": fb["id"]})
        elif not task.causal and fb.get("label") not in (None, "") and (text := _corrected_input(body, fb)) is not None:
            out.append({"text": text, "label": feedback_label(fb["label"], body), "feedback_id": fb["id"]})
        else:
            out.append({"unusable": True, "feedback_id": fb["id"]})
    return out


def _corrected_input(body: dict, fb: dict) -> str | None:
    """The input a label corrects: the one its ``index`` names (the server requires it for a request
    of several inputs), or the only one; None for an old row that cannot say which."""
    inputs = body.get("inputs") or []
    index = fb.get("input_index")
    if index is None and len(inputs) == 1:
        index = 0
    return inputs[index] if index is not None and 0 <= index < len(inputs) else None


def retrain_from_feedback(cfg: TunekitConfig, console: Console | None = None, since: float = 0.0):
    """Build the new dataset version from the current splits plus feedback, then run the pipeline on it."""
    from tunekit import pipeline

    console = console or Console()
    workspace = Workspace(cfg.workspace_dir)
    out_dir = workspace.retrain / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = task_kinds.kind(cfg.task)
    if kind.paired:
        pairs = feedback_pairs(cfg, workspace.serving_db, since)
        new_cfg, summary = _preference_version(cfg, pairs, out_dir)
        console.print(f"Feedback: {summary.used} preference pairs added to training (chosen: the corrected answer, rejected: the "
                      f"model's logged answer); left out: {summary.duplicates} duplicates, {summary.in_test} with a prompt in the "
                      f"test split (leakage); feedback that made no pair: {pairs.describe_skipped()}")
    else:
        collected = feedback_rows(cfg, workspace.serving_db, since)
        if kind.causal:
            new_cfg, summary = _generation_version(cfg, collected, out_dir)
        else:
            new_cfg, summary = _labelled_version(cfg, collected, out_dir)
        console.print(f"Feedback: {summary.used} corrections added to training; left out: {summary.duplicates} duplicates, "
                      f"{summary.in_test} already in the test split (leakage), {summary.unusable} without a usable correction")
    if not summary.used:
        raise DataError(f"no usable feedback for model {cfg.name!r} in {workspace.serving_db}: the model would retrain on "
                        "the same data. Collect corrections with POST /v1/feedback (label for classification, answer for generation; "
                        "for preference tuning, an answer on a chat answer that differs from the model's).")
    (out_dir / "feedback.json").write_text(json.dumps({"at": time.time(), **vars(summary) | {"rows": len(summary.rows)}}, indent=2))
    return pipeline.run(new_cfg, console)


def _labelled_version(cfg: TunekitConfig, collected: list[dict], out_dir: Path) -> tuple[TunekitConfig, FeedbackRows]:
    from tunekit import data as data_stage
    from tunekit.data import store
    from tunekit.data.validate import META_PREFIX

    prepared = data_stage.prepare(cfg)
    names = prepared.labels
    as_rows = {split: store.dataset_rows(getattr(prepared, split), names) if names else getattr(prepared, split).to_list()
               for split in ("train", "validation", "test")}
    test_texts = {_norm(r["text"]) for r in as_rows["test"]}
    # a text is one example per task: multi-task data holds the same text once for each of its tasks
    key_of = (lambda r: (task_of(r["label"]), _norm(r["text"]))) if prepared.multitask else (lambda r: _norm(r["text"]))
    seen = {key_of(r) for r in as_rows["train"] + as_rows["validation"]}
    summary = FeedbackRows([], 0, 0, 0, sum(1 for r in collected if r.get("unusable")))
    for row in (r for r in collected if not r.get("unusable")):
        key = key_of(row)
        if _norm(row["text"]) in test_texts:
            summary.in_test += 1
        elif key in seen:
            summary.duplicates += 1
        elif task_kinds.kind(cfg.task).labelled and row["label"] not in names:
            summary.unusable += 1  # a label the task does not have: adding a class is a decision for a person
        else:
            seen.add(key)
            summary.rows.append({"id": f"feedback-{row['feedback_id']}", "text": row["text"], "label": row["label"]})
    summary.used = len(summary.rows)
    meta = [c for c in cfg.data.metadata_columns]
    pair = cfg.data.text_pair_column is not None
    multi = prepared.multitask  # labels are stored as "task:label"; written back as two columns
    # ids travel in a column, so the test rows keep their ids and the test fingerprint: the retrained
    # version can be compared with its champion row by row (tunekit report A --compare B)
    columns = ["id", "text", *(["text_pair"] if pair else []), "label", *([cfg.data.task_column] if multi else []), *meta]

    def write(name: str, rows: list[dict]) -> str:
        path = out_dir / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for r in rows:
                label = [label_name(r["label"]), task_of(r["label"])] if multi else [r["label"]]
                w.writerow([r["id"], r.get("text", ""), *([r.get("text_pair", "")] if pair else []), *label,
                            *(r.get(f"{META_PREFIX}{c}", "") for c in meta)])
        return str(path)

    written = cfg.data.for_written_files(
        train=write("train", as_rows["train"] + summary.rows), validation=write("validation", as_rows["validation"]),
        test=write("test", as_rows["test"]), format="csv", text_column="text", label_column="label", id_column="id",
        text_pair_column="text_pair" if pair else None, task_column=cfg.data.task_column)
    return cfg.derive(data=written.model_dump(mode="json")), summary


def _generation_version(cfg: TunekitConfig, collected: list[dict], out_dir: Path) -> tuple[TunekitConfig, FeedbackRows]:
    from tunekit.data.conversations import prepare_conversations
    from tunekit.models import load_tokenizer, templates

    tokenizer = load_tokenizer(cfg.model.base, cfg.model.revision)
    prepared = prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))
    key = lambda messages: json.dumps([(m["role"], _norm(m["content"])) for m in messages if m["role"] != "assistant"])
    test_prompts = {key(r["messages"]) for r in prepared.test}
    seen = {json.dumps([(m["role"], _norm(m["content"])) for m in r["messages"]]) for r in prepared.train + prepared.validation}
    summary = FeedbackRows([], 0, 0, 0, sum(1 for r in collected if r.get("unusable")))
    for row in (r for r in collected if not r.get("unusable")):
        full = json.dumps([(m["role"], _norm(m["content"])) for m in row["messages"]])
        if key(row["messages"]) in test_prompts:
            summary.in_test += 1
        elif full in seen:
            summary.duplicates += 1
        else:
            seen.add(full)
            summary.rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]})
    summary.used = len(summary.rows)

    def write(name: str, rows: list[dict]) -> str:
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"messages": [{k: m[k] for k in ("role", "content")} | ({"weight": m["weight"]} if m["role"] == "assistant" and "weight" in m else {})
                                                          for m in r["messages"]]}, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    written = cfg.data.for_written_files(train=write("train", prepared.train + summary.rows), validation=write("validation", prepared.validation),
                                         test=write("test", prepared.test), layout="chat")
    return cfg.derive(data=written.model_dump(mode="json")), summary


def _preference_version(cfg: TunekitConfig, pairs: FeedbackPairs, out_dir: Path) -> tuple[TunekitConfig, FeedbackRows]:
    """The current preference splits plus the feedback pairs (training only), in OpenAI's preference format."""
    from tunekit.data.preference import REJECTED, prepare_preferences, prompt_of
    from tunekit.models import load_tokenizer, templates

    tokenizer = load_tokenizer(cfg.model.base, cfg.model.revision)
    prepared = prepare_preferences(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template))
    key = lambda messages: json.dumps([(m["role"], _norm(m["content"])) for m in messages])
    test_prompts = {key(prompt_of(r)) for r in prepared.test}
    seen = {(key(prompt_of(r)), _norm(r["messages"][-1]["content"]), _norm(r[REJECTED])) for r in prepared.train + prepared.validation}
    unusable = sum(pairs.skipped.values())
    summary = FeedbackRows([], 0, 0, 0, unusable, skipped=dict(pairs.skipped))
    system = cfg.data.system_prompt  # read_preferences puts it before a prompt without one: compare pairs as they will be read
    for pair in pairs.pairs:
        prompt = pair.prompt if system is None or any(m["role"] == "system" for m in pair.prompt) else [
            {"role": "system", "content": system}, *pair.prompt]
        full = (key(prompt), _norm(pair.chosen), _norm(pair.rejected))
        if full[0] in test_prompts:
            summary.in_test += 1
        elif full in seen:
            summary.duplicates += 1
        else:
            seen.add(full)
            summary.rows.append(pair.openai_row())
    summary.used = len(summary.rows)

    def as_openai(row: dict) -> dict:
        return {"input": {"messages": [{"role": m["role"], "content": m["content"]} for m in prompt_of(row)]},
                "preferred_output": [{"role": "assistant", "content": row["messages"][-1]["content"]}],
                "non_preferred_output": [{"role": "assistant", "content": row[REJECTED]}]}

    def write(name: str, rows: list[dict]) -> str:
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    written = cfg.data.for_written_files(train=write("train", [as_openai(r) for r in prepared.train] + summary.rows),
                                         validation=write("validation", [as_openai(r) for r in prepared.validation]),
                                         test=write("test", [as_openai(r) for r in prepared.test]))
    return cfg.derive(data=written.model_dump(mode="json")), summary


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())
