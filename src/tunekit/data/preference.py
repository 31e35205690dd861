"""The data stage for ``task: preference``: pairs of a preferred and a non-preferred answer to one prompt.

Two row layouts, told apart by their keys, in JSONL, JSON, CSV, TSV or Parquet (read by ``data.read``):

- OpenAI's preference fine-tuning format: ``{"input": {"messages": [...]}, "preferred_output":
  [{"role": "assistant", "content": ...}], "non_preferred_output": [{"role": "assistant", ...}]}``;
- ``prompt`` / ``chosen`` / ``rejected`` (TRL's): the prompt a string (one user turn) or a list of
  messages, each answer a string or a one-message list ``[{"role": "assistant", "content": ...}]``.

Every problem names its file, line and field, and all of them are reported at once. An empty
answer, or a pair whose two answers are the same text, is an error: it teaches nothing. A pair is
kept as a conversation row (``messages`` = the prompt and the preferred answer, so every stage that
reads conversations reads these too) with the non-preferred answer beside it, is split with the
seeded shuffle generation uses and frozen as Parquet through ``store.write_frozen`` (the answer to
avoid travels as the row's metadata), so fingerprints, reuse and the test fingerprint work as for
every task. Each pair is encoded twice with the model's template, prompt + preferred and prompt +
non-preferred, trained tokens being the final answer (and its EOS) only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.config import TunekitConfig
from tunekit.data import store
from tunekit.data.conversations import Encoded, frozen_directory, split_rows
from tunekit.data.problems import Problems
from tunekit.data.read import read_table
from tunekit.errors import DataError
from tunekit.models import templates

__all__ = ["PreferencePair", "PreparedPreferences", "prepare_preferences", "read_preferences", "summary"]

SPLITS = store.SPLITS
ROLES = ("system", "user", "assistant")
REJECTED = "rejected"  # the metadata key the non-preferred answer is frozen under


@dataclass
class PreferencePair:
    """One pair as the model sees it: prompt + preferred answer, prompt + non-preferred answer."""

    chosen: Encoded
    rejected: Encoded

    @property
    def tokens(self) -> int:
        return len(self.chosen.ids) + len(self.rejected.ids)


@dataclass
class PreparedPreferences:
    """Frozen splits of preference pairs with their encodings (``data.Prepared``).

    A row is ``{id, messages, rejected, origin}``: ``messages`` the prompt followed by the preferred
    answer as the last assistant turn, ``rejected`` the non-preferred answer's text."""

    rows: dict[str, list[dict]]
    encoded: dict[str, list[PreferencePair]]
    template: templates.Template
    fingerprint: str
    test_fingerprint: str
    directory: Path
    report: dict
    reused: bool
    labels: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[dict]:
        return self.rows["train"]

    @property
    def validation(self) -> list[dict]:
        return self.rows["validation"]

    @property
    def test(self) -> list[dict]:
        return self.rows["test"]


def prepare_preferences(cfg: TunekitConfig, tokenizer, template: templates.Template) -> PreparedPreferences:
    """Frozen, encoded splits of ``cfg.data``'s preference pairs (made now or reused) and the data report."""
    sources = store.source_files(cfg)
    key = store.source_key(cfg, sources)
    directory = frozen_directory(cfg, key)
    reused = directory is not None
    if not reused:
        rows, duplicates = _read_and_split(cfg, {s.role: s.path for s in sources})
        encoded = encode_all(cfg, tokenizer, template, rows)  # before freezing: a failed check leaves nothing behind
        directory = _freeze(cfg, key, sources, rows, duplicates)
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    else:
        rows, meta = read_frozen(directory)
        encoded = encode_all(cfg, tokenizer, template, rows)
    report = _report(cfg, rows, encoded, meta, template)
    store.write_json(directory / "report.json", report)
    (directory / "report.md").write_text(_report_markdown(report), encoding="utf-8")
    return PreparedPreferences(rows=rows, encoded=encoded, template=template, fingerprint=meta["fingerprint"],
                               test_fingerprint=meta["test_fingerprint"], directory=directory, report=report, reused=reused)


def read_preferences(path: Path, options, system_prompt: str | None = None, min_pairs: int = 1) -> list[dict]:
    """The pairs of one file as ``{id, messages, rejected, origin}`` rows; every problem at once in one
    ``DataError`` naming the file, the line (record, row) and the field."""
    table = read_table(Path(path), options)
    problems = table.problems
    rows = []
    for record in table.records:
        where = f"{path} {record.location}"
        row = _pair(record.values, where, problems)
        if row is None:
            continue
        prompt, chosen, rejected = row
        if system_prompt is not None and all(m["role"] != "system" for m in prompt):
            prompt = [{"role": "system", "content": system_prompt, "weight": 0}, *prompt]
        messages = [*prompt, {"role": "assistant", "content": chosen, "weight": 1}]
        rows.append({"id": _pair_id(messages, rejected), "messages": messages, REJECTED: rejected,
                     "origin": f"{Path(path).name} {record.location}"})
    problems.raise_if_any(str(path))
    if len(rows) < min_pairs:
        raise DataError(f"{path}: found {len(rows)} preference pair{'s' if len(rows) != 1 else ''}; preference tuning needs at least "
                        f"{min_pairs}: add pairs")
    return rows


def _pair(value: dict, where: str, problems: Problems) -> tuple[list[dict], str, str] | None:
    """(prompt messages, preferred text, non-preferred text) of one row, or None after adding its problems."""
    before = problems.total
    if "input" in value or "preferred_output" in value or "non_preferred_output" in value:
        unknown = sorted(set(value) - {"input", "preferred_output", "non_preferred_output", "metadata"})
        if unknown:
            problems.add(f"{where}: unknown field(s) {', '.join(unknown)}; OpenAI's preference format has input, preferred_output "
                         "and non_preferred_output")
        given = value.get("input")
        if not isinstance(given, dict) or "messages" not in given:
            problems.add(f'{where}: field `input`: expected an object {{"messages": [...]}}, got {_json_type(given)}')
            prompt = None
        else:
            prompt = _messages(given["messages"], f"{where}: field `input.messages`", problems)
        chosen = _answer(value.get("preferred_output"), f"{where}: field `preferred_output`", problems)
        rejected = _answer(value.get("non_preferred_output"), f"{where}: field `non_preferred_output`", problems)
        names = ("preferred_output", "non_preferred_output")
    elif {"prompt", "chosen", "rejected"} & set(value):
        given = value.get("prompt")
        if isinstance(given, str):
            prompt = [{"role": "user", "content": given, "weight": 0}] if given.strip() else None
            if prompt is None:
                problems.add(f"{where}: field `prompt` is empty; write the prompt the two answers reply to")
        else:
            prompt = _messages(given, f"{where}: field `prompt`", problems)
        chosen = _answer(value.get("chosen"), f"{where}: field `chosen`", problems)
        rejected = _answer(value.get("rejected"), f"{where}: field `rejected`", problems)
        names = ("chosen", "rejected")
    else:
        problems.add(f"{where}: cannot tell the layout from the keys {', '.join(map(str, value)) or '(none)'}; expected OpenAI's "
                     '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]} or '
                     '{"prompt", "chosen", "rejected"}')
        return None
    if prompt is not None and not any(m["role"] == "user" for m in prompt):
        problems.add(f"{where}: the prompt has no user message; the answers must reply to one")
    if chosen is not None and rejected is not None and chosen.strip() == rejected.strip():
        problems.add(f"{where}: fields `{names[0]}` and `{names[1]}` are the same answer ({_clip(chosen)!r}); a pair must "
                     "prefer one answer over a different one: fix or remove the row")
    if problems.total > before or prompt is None or chosen is None or rejected is None:
        return None
    return prompt, chosen, rejected


def _messages(value: Any, where: str, problems: Problems) -> list[dict] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)  # CSV and Parquet hold the list as JSON text
        except json.JSONDecodeError:
            problems.add(f"{where}: expected a list of messages, got a string that is not JSON")
            return None
    if not isinstance(value, list) or not value:
        problems.add(f"{where}: expected a non-empty list of messages, got {_json_type(value)}")
        return None
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            problems.add(f'{where}[{k}]: expected {{"role": "system|user|assistant", "content": "..."}}, got '
                         f"{json.dumps(m, ensure_ascii=False)[:80]}")
            return None
        out.append({"role": m["role"], "content": m["content"], "weight": 0})  # earlier answers are context, not trained
    if out[-1]["role"] == "assistant":
        problems.add(f"{where}: the prompt ends with an assistant message; it must end where the two answers begin")
        return None
    return out


def _answer(value: Any, where: str, problems: Problems) -> str | None:
    """The text of an answer: a string, or a list of exactly one assistant message."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            problems.add(f'{where}: expected one assistant message [{{"role": "assistant", "content": "..."}}], got '
                         f"{json.dumps(value, ensure_ascii=False)[:80]}")
            return None
        value = value[0].get("content")
    if value is None:
        problems.add(f"{where}: missing; every pair needs a preferred and a non-preferred answer")
        return None
    if not isinstance(value, str):
        problems.add(f"{where}: expected the answer's text, got {_json_type(value)}")
        return None
    if not value.strip():
        problems.add(f"{where}: the answer is empty; write it, or remove the pair")
        return None
    return value


def _read_and_split(cfg: TunekitConfig, paths: dict[str, Path]) -> tuple[dict[str, list[dict]], int]:
    from tunekit.data.prepare import read_options

    read = {role: read_preferences(path, read_options(cfg, f"data.{role}"), cfg.data.system_prompt,
                                   min_pairs=10 if role == "train" else 1) for role, path in paths.items()}
    seen: dict[str, str] = {}
    duplicates, problems = 0, Problems()
    for role in ("test", "validation", "train"):  # a duplicate is kept where it is evaluated, removed from training
        kept = []
        for row in read.get(role, []):
            if row["id"] in seen:
                duplicates += 1
                if cfg.data.duplicates == "error":
                    problems.add(f"{row['origin']}: the same pair as {seen[row['id']]}; remove one, or set `data.duplicates: drop`")
                continue
            seen[row["id"]] = row["origin"]
            kept.append(row)
        if role in read:
            read[role] = kept
    problems.raise_if_any("the preference data")
    return split_rows(cfg, read, "pairs"), duplicates


def _as_conversation(row: dict) -> dict:
    return {"id": row["id"], "messages": row["messages"], "origin": row["origin"], "meta": {REJECTED: row[REJECTED]}}


def _canonical(row: dict) -> dict:
    return store.conversation_canonical(_as_conversation(row))


def _freeze(cfg: TunekitConfig, key: str, sources, rows: dict[str, list[dict]], duplicates: int) -> Path:
    canonical = {name: [_canonical(r) for r in rows[name]] for name in SPLITS}
    meta = {
        "store_version": store.STORE_VERSION, "task": "preference", "fingerprint": store.fingerprint(canonical, []),
        "test_fingerprint": store.split_fingerprint(canonical["test"]), "source_key": key,
        "sources": [{"role": s.role, "path": str(s.path), "sha256": s.sha256, "bytes": s.size} for s in sources],
        "data_config": cfg.data.model_dump(mode="json"), "rows": {n: len(rows[n]) for n in SPLITS}, "duplicates_removed": duplicates,
    }
    tables = {name: store.conversation_table([_as_conversation(r) for r in rows[name]], [REJECTED]) for name in SPLITS}
    return store.write_frozen(cfg, key, tables, [], meta)


def read_frozen(directory: Path) -> tuple[dict[str, list[dict]], dict]:
    """The frozen pairs of ``directory`` and its meta; a folder edited since it was frozen is an error."""
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    frozen = store.read_conversations(directory)
    rows = {name: [{"id": r["id"], "messages": r["messages"], REJECTED: (r.get("meta") or {}).get(REJECTED, ""), "origin": r["origin"]}
                   for r in frozen[name]] for name in SPLITS}
    if store.fingerprint({name: [_canonical(r) for r in rows[name]] for name in SPLITS}, []) != meta["fingerprint"]:
        raise DataError(f"{directory}: the frozen splits no longer match their fingerprint {meta['fingerprint'][:16]} "
                        "(were files in it edited?); delete this folder to make them again from the source files")
    return rows, meta


def prompt_of(row: dict) -> list[dict]:
    """The conversation the two answers reply to."""
    return row["messages"][:-1]


def encode_all(cfg: TunekitConfig, tokenizer, template, rows: dict[str, list[dict]]) -> dict[str, list[PreferencePair]]:
    """Both sides of every pair as ids and a mask of the answer's tokens; a side longer than
    ``model.max_length`` is an error naming the pair (truncating one side would compare unequal answers)."""
    problems, limit = Problems(), cfg.model.max_length
    out: dict[str, list[PreferencePair]] = {}
    for name in SPLITS:
        out[name] = []
        for row in rows[name]:
            sides = []
            for answer in (row["messages"][-1]["content"], row[REJECTED]):
                ids, mask = templates.encode(tokenizer, template, [*prompt_of(row), {"role": "assistant", "content": answer, "weight": 1}])
                sides.append(Encoded(ids, mask))
            longest = max(len(s.ids) for s in sides)
            if longest > limit:
                problems.add(f"{row['origin']}: {longest} tokens with its longer answer, more than model.max_length {limit}; "
                             "raise model.max_length or shorten the pair")
            elif not all(any(s.mask) for s in sides):
                problems.add(f"{row['origin']}: an answer renders to no token with this template; write it out")
            out[name].append(PreferencePair(*sides))
    problems.raise_if_any("the preference data")
    return out


def _report(cfg, rows, encoded, meta, template) -> dict:
    def stats(values: list[int]) -> dict:
        a = np.asarray(values) if values else np.zeros(1)
        return {"p50": int(np.percentile(a, 50)), "p95": int(np.percentile(a, 95)), "max": int(a.max())}

    warnings = []
    if meta.get("duplicates_removed"):
        warnings.append(f"{meta['duplicates_removed']} duplicate pairs removed (kept once, in the evaluated split when they were in one)")
    longer = sum(len(p.chosen.ids) > len(p.rejected.ids) for p in encoded["train"])
    share = longer / max(len(encoded["train"]), 1)
    if share > 0.8 or share < 0.2:
        warnings.append(f"the preferred answer is the longer one in {share:.0%} of training pairs: the model may learn length "
                        "rather than quality")
    return {
        "name": cfg.name, "task": "preference", "fingerprint": meta["fingerprint"], "test_fingerprint": meta["test_fingerprint"],
        "rows": {n: len(rows[n]) for n in SPLITS}, "template": template.name, "max_length": cfg.model.max_length,
        "duplicates_removed": meta.get("duplicates_removed", 0),
        "tokens": {n: stats([max(len(p.chosen.ids), len(p.rejected.ids)) for p in encoded[n]]) for n in SPLITS},
        "answer_tokens": {side: stats([sum(getattr(p, side).mask) for p in encoded["train"]]) for side in ("chosen", "rejected")},
        "preferred_longer": round(share, 4), "warnings": warnings,
    }


def _report_markdown(report: dict) -> str:
    lines = [f"# Data report: {report['name']} (preference pairs)", "",
             f"Fingerprint `{report['fingerprint'][:16]}`; template `{report['template']}`; model.max_length {report['max_length']}.", "",
             "| split | pairs | tokens p50 (longer side) | p95 | max |", "|---|---|---|---|---|"]
    for n in SPLITS:
        t = report["tokens"][n]
        lines.append(f"| {n} | {report['rows'][n]} | {t['p50']} | {t['p95']} | {t['max']} |")
    lines += ["", (f"Preferred answer longer than the other in {report['preferred_longer']:.0%} of training pairs. "
              f"Duplicates removed: {report['duplicates_removed']}."), ""]
    return "\n".join(lines + ([f"- Warning: {w}" for w in report["warnings"]] or ["No warnings."])) + "\n"


def summary(prepared: PreparedPreferences) -> str:
    r = prepared.report
    state = "reused frozen splits" if prepared.reused else "froze new splits"
    t = r["tokens"]["train"]
    lines = [(f"Data {r['name']}: {r['rows']['train']} train / {r['rows']['validation']} validation / {r['rows']['test']} test "
             f"preference pairs, template {r['template']}"),
             f"Fingerprint {prepared.fingerprint[:16]} ({state} in {prepared.directory})",
             f"Tokens per pair (longer side): p50 {t['p50']}, p95 {t['p95']}, max {t['max']} (limit {r['max_length']})"]
    return "\n".join(lines + ([f"Warning: {w}" for w in r["warnings"]] or ["No warnings."]))


def _pair_id(messages: list[dict], rejected: str) -> str:
    blob = json.dumps([[m["role"], m["content"]] for m in messages] + [rejected], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "nothing" if value is None else names.get(type(value), type(value).__name__)
