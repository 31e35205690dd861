"""The generation data stage: frozen splits, encodings, over-length policy, preview."""

from __future__ import annotations

import pytest
import yaml

from tests.generation.conftest import reverse_rows, write_jsonl
from tunekit.config import load_config
from tunekit.data import conversations
from tunekit.errors import DataError
from tunekit.models import load_tokenizer, templates


def _prepare(tmp_path, tiny_llama, rows, **data):
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "train.jsonl", rows)
    raw = {"name": "rev", "task": "generation", "workspace": str(tmp_path / "ws"),
           "data": {"train": "train.jsonl", **data}, "model": {"base": str(tiny_llama), "max_length": 40}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "config.yaml")
    tokenizer = load_tokenizer(cfg.model.base)
    return conversations.prepare_conversations(cfg, tokenizer, templates.resolve(tokenizer, cfg.model.template)), tokenizer


def _long_row() -> dict:
    return {"messages": [{"role": "user", "content": "repeat: apple"},
                         {"role": "assistant", "content": " ".join(["apple"] * 30)}]}


def test_splits_are_frozen_encoded_and_reused(tmp_path, tiny_llama):
    first, _ = _prepare(tmp_path, tiny_llama, reverse_rows(60))
    assert {k: len(v) for k, v in first.rows.items()} == {"train": 42, "validation": 6, "test": 12}
    assert all(e.trained > 0 and len(e.ids) == len(e.mask) for e in first.encoded["train"])
    assert first.report["template"] == "chatml" and not first.reused
    again, _ = _prepare(tmp_path, tiny_llama, reverse_rows(60))
    assert again.reused and again.fingerprint == first.fingerprint and again.rows == first.rows


def test_duplicates_never_straddle_train_and_test(tmp_path, tiny_llama):
    rows = reverse_rows(40, lengths=(2, 4))
    prepared, _ = _prepare(tmp_path, tiny_llama, rows + rows[:20])  # 20 exact duplicates
    ids = {name: {r["id"] for r in prepared.rows[name]} for name in prepared.rows}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    assert prepared.report["duplicates_removed"] == 20


def test_overlength_is_an_error_naming_the_line_by_default(tmp_path, tiny_llama):
    rows = reverse_rows(30)
    rows.insert(6, _long_row())  # line 7 of the file
    with pytest.raises(DataError, match=r"train.jsonl line 7: \d+ tokens, more than model.max_length 40"):
        _prepare(tmp_path, tiny_llama, rows, split={"validation": 0.1, "test": 0.1, "seed": 1})


def test_overlength_drop_and_truncate_are_counted(tmp_path, tiny_llama):
    rows = reverse_rows(30) + [_long_row()]
    dropped, _ = _prepare(tmp_path / "a", tiny_llama, rows, overlength="drop")
    assert dropped.report["overlength"] == {"policy": "drop", "max_length": 40, "over": 1, "truncated": 0, "dropped": 1}
    assert sum(map(len, dropped.rows.values())) == 30
    cut, _ = _prepare(tmp_path / "b", tiny_llama, rows, overlength="truncate")
    assert cut.report["overlength"]["truncated"] == 1
    assert max(len(e.ids) for split in cut.encoded.values() for e in split) == 40


def test_truncation_that_leaves_nothing_to_train_is_an_error(tmp_path, tiny_llama):
    long_prompt = {"messages": [{"role": "user", "content": "reverse: " + " ".join(["apple"] * 40)},
                                {"role": "assistant", "content": "apple"}]}
    with pytest.raises(DataError, match="no assistant token is left"):
        _prepare(tmp_path, tiny_llama, reverse_rows(30) + [long_prompt], overlength="truncate")


def test_preview_marks_exactly_the_trained_tokens(tmp_path, tiny_llama):
    prepared, tokenizer = _prepare(tmp_path, tiny_llama, reverse_rows(30))
    pieces = conversations.preview(tokenizer, prepared, 2)[0]
    trained = "".join(text for text, on in pieces if on)
    _, reference = conversations.prompt_and_reference(prepared.train[0])
    assert trained.startswith(reference) and trained.endswith("</s>")
    assert "user" in "".join(text for text, on in pieces if not on)
