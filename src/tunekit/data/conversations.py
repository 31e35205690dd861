"""The data stage for ``task: generation``: conversation files to frozen splits, tokens and loss masks.

``prepare_conversations(cfg, tokenizer, template)`` reads every file (``data.chat``: OpenAI chat
JSONL, Alpaca or prompt/completion, all canonicalised to messages), drops exact duplicates so one
example can never sit in both train and test, splits with a seeded shuffle, freezes the splits
under their fingerprint like classification data, and encodes every example with the model's
template (``models.templates.encode``). Then it is loud about the failure modes that silently ruin
chat fine-tuning: an example longer than ``model.max_length`` follows ``data.overlength`` (an error
naming each one by default), and an example left with no trained token is always an error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunekit import task_kinds
from tunekit.config import TunekitConfig
from tunekit.data import pii_scan, store
from tunekit.data.chat import read_conversations
from tunekit.data.problems import Problems
from tunekit.errors import DataError
from tunekit.models import templates

SPLITS = store.SPLITS


@dataclass
class Encoded:
    """One example as the model sees it: token ids and the 0/1 mask of trained tokens."""

    ids: list[int]
    mask: list[int]

    @property
    def trained(self) -> int:
        return sum(self.mask)


@dataclass
class PreparedConversations:
    """Frozen splits of conversations with their encodings; every later generation stage reads this."""

    rows: dict[str, list[dict]]          # split -> [{id, messages, origin}]
    encoded: dict[str, list[Encoded]]    # split -> encodings, aligned with rows
    template: templates.Template
    fingerprint: str
    test_fingerprint: str
    directory: Path
    report: dict
    reused: bool
    labels: list[str] = field(default_factory=list)  # none: lets task-agnostic code treat both kinds alike

    @property
    def train(self) -> list[dict]:
        return self.rows["train"]

    @property
    def validation(self) -> list[dict]:
        return self.rows["validation"]

    @property
    def test(self) -> list[dict]:
        return self.rows["test"]


def prepare_conversations(cfg: TunekitConfig, tokenizer, template: templates.Template) -> PreparedConversations:
    """Frozen, encoded splits for ``cfg.data`` (made now or reused) and the data report."""
    sources = store.source_files(cfg)
    key = store.source_key(cfg, sources)
    directory = frozen_directory(cfg, key)
    reused = directory is not None
    if directory is None:
        rows, duplicates = _read_and_split(cfg, {s.role: s.path for s in sources})
        check_answers(cfg, rows["test"])
        whole = {name: list(rows[name]) for name in SPLITS}
        encoded, overlength = encode_all(cfg, tokenizer, template, rows)  # before freezing: a failed check leaves nothing behind
        directory = _freeze(cfg, key, sources, whole, duplicates)
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    else:
        rows, meta = read_frozen(directory)
        check_answers(cfg, rows["test"])
        encoded, overlength = encode_all(cfg, tokenizer, template, rows)
    report = _report(cfg, rows, encoded, overlength, meta, template)
    store.write_json(directory / "report.json", report)
    (directory / "report.md").write_text(report_markdown(report), encoding="utf-8")
    return PreparedConversations(rows=rows, encoded=encoded, template=template, fingerprint=meta["fingerprint"],
                                 test_fingerprint=meta["test_fingerprint"], directory=directory, report=report, reused=reused)


def prompt_and_reference(row: dict) -> tuple[list[dict], str]:
    """The conversation up to its last assistant turn (what the model is asked) and that turn (the reference)."""
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def check_answers(cfg: TunekitConfig, test: list[dict]) -> None:
    """With ``eval.extract``, every test reference must hold an answer: one without could never be matched."""
    if cfg.eval.extract is None:
        return
    from tunekit.data.answers import extract_answer

    problems = Problems()
    for row in test:
        reference = prompt_and_reference(row)[1]
        if extract_answer(reference, cfg.eval.extract) is None:
            short = reference if len(reference) <= 60 else "…" + reference[-59:]
            problems.add(f"{row['origin']}: the reference answer {short!r} has no answer for eval.extract {cfg.eval.extract!r}; "
                         "fix the row, or change eval.extract")
    problems.raise_if_any("the test references")


def _read_and_split(cfg: TunekitConfig, paths: dict[str, Path]) -> tuple[dict[str, list[dict]], int]:
    d = cfg.data
    from tunekit.data.prepare import read_options

    read = {role: read_conversations(path, d.layout, d.system_prompt, d.prompt_column, d.completion_column, d.encoding,
                                     min_examples=10 if role == "train" else 1, options=read_options(cfg, f"data.{role}"),
                                     metadata_columns=d.metadata_columns, fallback_columns=d.fallback_columns)
            for role, path in paths.items()}
    seen: dict[str, str] = {}
    duplicates, problems = 0, Problems()
    for role in ("test", "validation", "train"):  # a duplicate is kept where it is evaluated, removed from training
        kept = []
        for row in read.get(role, []):
            if row["id"] in seen:
                duplicates += 1
                if cfg.data.duplicates == "error":
                    problems.add(f"{paths[role]} {row['at']}: the same example as {seen[row['id']]}; remove one, or set "
                                 "`data.duplicates: drop` to keep it once, in the evaluated split (counted in the data report)")
                continue
            seen[row["id"]] = f"{paths[role].name} {row['at']}"
            kept.append({"id": row["id"], "messages": row["messages"], "origin": f"{paths[role].name} {row['at']}",
                         **({"meta": row["meta"]} if "meta" in row else {})})
        if role in read:
            read[role] = kept
    problems.raise_if_any("the generation data")
    return split_rows(cfg, read, "examples"), duplicates


def split_rows(cfg: TunekitConfig, read: dict[str, list[dict]], unit: str) -> dict[str, list[dict]]:
    """Train, validation and test from the rows read per file: a split missing its own file is drawn
    from the training rows (seeded by ``data.split.seed``), then ``data.max_train_rows`` samples
    train; fewer than 10 training ``unit`` (examples, pairs) left is a ``DataError``."""
    train = read["train"]
    rng = np.random.default_rng(cfg.data.split.seed)
    order = list(rng.permutation(len(train)))
    out: dict[str, list[dict]] = {}
    for role in ("test", "validation"):
        if role in read:
            out[role] = read[role]
        else:
            n = max(1, round(getattr(cfg.data.split, role) * len(train)))
            out[role], order = [train[i] for i in order[:n]], order[n:]
    out["train"] = [train[i] for i in sorted(order)]
    if cfg.data.max_train_rows and len(out["train"]) > cfg.data.max_train_rows:
        pick = sorted(rng.choice(len(out["train"]), cfg.data.max_train_rows, replace=False))
        out["train"] = [out["train"][i] for i in pick]
    if len(out["train"]) < 10:
        raise DataError(f"data.train: only {len(out['train'])} training {unit} remain after splitting off validation and test "
                        f"{unit}; give at least 10 (more is better) or pass data.validation and data.test files")
    return out


def frozen_directory(cfg: TunekitConfig, key: str) -> Path | None:
    """The frozen splits of the source files behind ``key``, when a complete freeze of them exists."""
    fp = store.read_index(store.datasets_root(cfg)).get(key)
    directory = store.datasets_root(cfg) / fp[:16] if fp else None
    return directory if directory is not None and (directory / "meta.json").is_file() else None


def _freeze(cfg: TunekitConfig, key: str, sources, rows: dict[str, list[dict]], duplicates: int) -> Path:
    """Freeze the splits as Parquet through ``store.write_frozen``, like every task's (see ``store``)."""
    canonical = {name: [_canonical(r) for r in rows[name]] for name in SPLITS}
    fp = store.fingerprint(canonical, [])
    test_fp = store.split_fingerprint(canonical["test"])
    meta = {
        "store_version": store.STORE_VERSION, "task": "generation", "fingerprint": fp, "test_fingerprint": test_fp,
        "source_key": key, "sources": [{"role": s.role, "path": str(s.path), "sha256": s.sha256, "bytes": s.size} for s in sources],
        "data_config": cfg.data.model_dump(mode="json"), "rows": {n: len(rows[n]) for n in SPLITS}, "duplicates_removed": duplicates,
    }
    meta_keys = store.conversation_meta_keys(rows)
    tables = {name: store.conversation_table(rows[name], meta_keys) for name in SPLITS}
    return store.write_frozen(cfg, key, tables, [], meta)


def read_frozen(directory: Path) -> tuple[dict[str, list[dict]], dict]:
    """The frozen conversation rows of ``directory`` (Parquet, or the JSONL of folders frozen before) and its meta."""
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    rows = store.read_conversations(directory)
    canonical = {name: [_canonical(r) for r in rows[name]] for name in SPLITS}
    if store.fingerprint(canonical, []) != meta["fingerprint"]:
        raise DataError(f"{directory}: the frozen splits no longer match their fingerprint {meta['fingerprint'][:16]} "
                        "(were files in it edited?); delete this folder to make them again from the source files")
    return rows, meta


_canonical = store.conversation_canonical  # what the fingerprint covers: id, messages and any metadata


def encode_all(cfg: TunekitConfig, tokenizer, template, rows: dict[str, list[dict]]) -> tuple[dict[str, list[Encoded]], dict]:
    """Encode every example; apply ``data.overlength`` (test rows: ``data.overlength_test``); every example must keep a trained token.

    ``rows`` loses the dropped examples, so it stays aligned with the encodings.
    """
    limit, policy = cfg.model.max_length, cfg.data.overlength
    test_policy = cfg.data.overlength_test or ("refuse" if policy == "drop" else policy)
    problems = Problems()
    counts = {"policy": policy, "max_length": limit, "over": 0, "truncated": 0, "dropped": 0,
              "per_split": {name: {"rows": len(rows[name]), "over": 0, "truncated": 0, "dropped": 0} for name in SPLITS}}
    refused: list[str] = []
    out: dict[str, list[Encoded]] = {}
    for name in SPLITS:
        rule, split = (test_policy if name == "test" else policy), counts["per_split"][name]
        kept_rows, kept = [], []
        for row in rows[name]:
            ids, mask = templates.encode(tokenizer, template, row["messages"])
            if not any(mask):
                problems.add(f"{row['origin']}: no token of this example is trained (the assistant turns render empty or all "
                             "have weight 0); give it an assistant answer with weight 1")
                continue
            if len(ids) > limit:
                split["over"] += 1
                if rule == "refuse":
                    refused.append(row["origin"])
                    continue
                if rule == "error":
                    problems.add(f"{row['origin']}: {len(ids)} tokens, more than model.max_length {limit}; raise model.max_length, "
                                 "shorten the example, or set data.overlength to truncate or drop")
                    continue
                if rule == "drop":
                    split["dropped"] += 1
                    continue
                ids, mask = fit(tokenizer, template, row["messages"], limit)
                split["truncated"] += 1
                if not any(mask):
                    problems.add(f"{row['origin']}: truncated to model.max_length {limit} tokens, no assistant token is left to train on; "
                                 "raise model.max_length or set data.overlength: drop")
                    continue
            kept_rows.append(row)
            kept.append(Encoded(ids, mask))
        rows[name], out[name] = kept_rows, kept
    if refused:
        problems.add(f"{len(refused)} of {len(rows['test']) + len(refused)} test examples are longer than model.max_length {limit} "
                     f"({', '.join(refused[:5])}{', ...' if len(refused) > 5 else ''}); data.overlength: drop does not drop test rows, "
                     "because that changes what the test measures: set data.overlength_test: truncate (keep them, shortened on the "
                     "prompt side) or drop (the data report then says how many test rows went), or raise model.max_length")
    problems.raise_if_any("the generation data")
    for key in ("over", "truncated", "dropped"):
        counts[key] = sum(split[key] for split in counts["per_split"].values())
    for name in SPLITS:
        if not out[name]:
            raise DataError(f"no {name} example is left after data.overlength {policy!r} dropped {counts['dropped']} over "
                            f"model.max_length {limit}; raise model.max_length")
    return out, counts


def fit(tokenizer, template, messages: list[dict], limit: int) -> tuple[list[int], list[int]]:
    """Ids and mask of ``messages`` in at most ``limit`` tokens, shortened on the prompt side first.

    First the oldest turns before the last prompt go (the system message stays), then the end of
    the last prompt is cut; only when the system message, the prompt's first token and the answer
    still do not fit is the answer itself cut at its end.
    """
    messages = [dict(m) for m in messages]
    ids, mask = templates.encode(tokenizer, template, messages)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    while len(ids) > limit:  # drop the oldest turn (a prompt and what follows it, up to the next prompt)
        first = next(i for i, m in enumerate(messages) if m["role"] != "system")
        following = next((i for i in range(first + 1, last) if messages[i]["role"] == "user"), None)
        if following is None:
            break
        del messages[first:following]
        last -= following - first
        ids, mask = templates.encode(tokenizer, template, messages)
    prompt = last - 1
    for _ in range(4):  # cut the end of the last prompt; token boundaries may shift a little on re-encoding
        if len(ids) <= limit or prompt < 0 or messages[prompt]["role"] == "system":
            break
        content = tokenizer(messages[prompt]["content"], add_special_tokens=False)["input_ids"]
        keep = max(1, len(content) - (len(ids) - limit) - 1)
        if keep >= len(content):
            break
        messages[prompt] = {**messages[prompt], "content": tokenizer.decode(content[:keep]).rstrip()}
        ids, mask = templates.encode(tokenizer, template, messages)
    return ids[:limit], mask[:limit]


def _report(cfg, rows, encoded, overlength, meta, template) -> dict:
    def stats(values: list[int]) -> dict:
        a = np.asarray(values) if values else np.zeros(1)
        return {"p50": int(np.percentile(a, 50)), "p95": int(np.percentile(a, 95)), "max": int(a.max()), "mean": round(float(a.mean()), 1)}

    warnings = []
    for name, split in overlength.get("per_split", {}).items():
        if split["over"]:
            warnings.append(f"{split['over']} of {split['rows']} {name} examples are longer than model.max_length "
                            f"{overlength['max_length']} tokens ({split['truncated']} truncated, {split['dropped']} dropped)")
    test = overlength.get("per_split", {}).get("test", {})
    if test.get("dropped"):
        warnings.append(f"the test set changed: {test['dropped']} of {test['rows']} test examples were dropped as over-length, "
                        f"so test metrics are on {test['rows'] - test['dropped']} examples")
    if meta.get("duplicates_removed"):
        warnings.append(f"{meta['duplicates_removed']} duplicate examples removed (kept once, in the evaluated split when they were in one)")
    pii = pii_scan.scan(rows, lambda row: [m["content"] for m in row["messages"]], lambda row: row["origin"])
    warnings += pii_scan.warnings(pii)
    turns = [sum(m["role"] == "assistant" for m in r["messages"]) for r in rows["train"]]
    return {
        "name": cfg.name, "task": "generation", "fingerprint": meta["fingerprint"], "test_fingerprint": meta["test_fingerprint"],
        "rows": {n: len(rows[n]) for n in SPLITS}, "template": template.name, "max_length": cfg.model.max_length,
        "duplicates_removed": meta.get("duplicates_removed", 0), "overlength": overlength,
        "tokens": {n: stats([len(e.ids) for e in encoded[n]]) for n in SPLITS},
        "trained_tokens": {n: stats([e.trained for e in encoded[n]]) for n in SPLITS},
        "train_tokens_total": int(sum(len(e.ids) for e in encoded["train"])),
        "multi_turn": int(sum(t > 1 for t in turns)), "with_system": int(sum(r["messages"][0]["role"] == "system" for r in rows["train"])),
        "pii": pii, "warnings": warnings,
    }


def report_markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [f"# Data report: {report['name']} (generation)", "",
             f"Fingerprint `{report['fingerprint'][:16]}`; template `{report['template']}`; model.max_length {report['max_length']}.", "",
             "| split | examples | tokens p50 | p95 | max | trained tokens p50 | p95 |", "|---|---|---|---|---|---|---|"]
    for n in SPLITS:
        t, a = report["tokens"][n], report["trained_tokens"][n]
        lines.append(f"| {n} | {rows[n]} | {t['p50']} | {t['p95']} | {t['max']} | {a['p50']} | {a['p95']} |")
    o = report["overlength"]
    per = "; ".join(f"{n} {v['over']} of {v['rows']}" for n, v in o.get("per_split", {}).items())
    lines += ["", f"Over model.max_length: {o['over']} ({per}; policy `{o['policy']}`: {o['truncated']} truncated, {o['dropped']} dropped). "
              f"Duplicates removed: {report['duplicates_removed']}. Multi-turn training examples: {report['multi_turn']}; "
              f"with a system message: {report['with_system']}.", ""]
    lines += [f"- Warning: {w}" for w in report["warnings"]] or ["No warnings."]
    if "pii" in report:
        lines += ["", pii_scan.markdown(report["pii"])]
    return "\n".join(lines) + "\n"


def summary(prepared: PreparedConversations) -> str:
    r = prepared.report
    state = "reused frozen splits" if prepared.reused else "froze new splits"
    t = r["tokens"]["train"]
    lines = [f"Data {r['name']}: {r['rows']['train']} train / {r['rows']['validation']} validation / {r['rows']['test']} test conversations, "
             f"template {r['template']}",
             f"Fingerprint {prepared.fingerprint[:16]} ({state} in {prepared.directory})",
             f"Train tokens per example: p50 {t['p50']}, p95 {t['p95']}, max {t['max']} (limit {r['max_length']}); "
             f"{r['train_tokens_total']} in all"]
    return "\n".join(lines + ([f"Warning: {w}" for w in r["warnings"]] or ["No warnings."]))


def preview(tokenizer, prepared: PreparedConversations, n: int = 3) -> list[list[tuple[str, bool]]]:
    """The first ``n`` training examples as (text, trained) pieces, decoded token run by token run,
    so a person sees exactly which tokens the loss covers (and that EOS is among them)."""
    out = []
    for enc in prepared.encoded["train"][:n]:
        pieces: list[tuple[str, bool]] = []
        start = 0
        for i in range(1, len(enc.ids) + 1):
            if i == len(enc.ids) or enc.mask[i] != enc.mask[start]:
                pieces.append((tokenizer.decode(enc.ids[start:i], skip_special_tokens=False), bool(enc.mask[start])))
                start = i
        out.append(pieces)
    return out


def config_texts(cfg: TunekitConfig) -> list[str]:
    """The plain text of every example in the files ``cfg`` names, read with its layout, column and
    format options (what ``tunekit models tiny`` trains a tokenizer on when given a config)."""
    from tunekit.data.chat import render_plain
    from tunekit.data.prepare import read_options, read_rows

    texts: list[str] = []
    d = cfg.data
    for role in SPLITS:
        value = d.file_path(role)
        if value is None:
            continue
        if not task_kinds.kind(cfg.task).causal:
            texts += [" ".join(filter(None, (r["text"], r.get("text_pair")))) for r in read_rows(value, cfg, f"data.{role}")]
            continue
        rows = read_conversations(cfg.path(value), d.layout, d.system_prompt, d.prompt_column, d.completion_column, d.encoding,
                                  min_examples=1, options=read_options(cfg, f"data.{role}"),
                                  metadata_columns=d.metadata_columns, fallback_columns=d.fallback_columns)
        texts += [render_plain(r["messages"]) for r in rows]
    return texts


def fingerprint_of(messages: list[dict]) -> str:
    """The id of an example: its content hash (what ``data.chat`` assigns)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
