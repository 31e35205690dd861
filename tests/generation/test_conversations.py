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


def test_overlength_drop_and_truncate_are_counted_per_split(tmp_path, tiny_llama):
    rows = reverse_rows(30) + [_long_row()]
    split = {"validation": 0.1, "test": 0.1, "seed": 13}
    dropped, _ = _prepare(tmp_path / "a", tiny_llama, rows, overlength="drop", split=split)
    o = dropped.report["overlength"]
    assert (o["over"], o["truncated"], o["dropped"]) == (1, 0, 1)
    assert o["per_split"] == {"train": {"rows": 25, "over": 1, "truncated": 0, "dropped": 1},
                              "validation": {"rows": 3, "over": 0, "truncated": 0, "dropped": 0},
                              "test": {"rows": 3, "over": 0, "truncated": 0, "dropped": 0}}
    assert "1 of 25 train examples are longer than model.max_length 40 tokens (0 truncated, 1 dropped)" in dropped.report["warnings"]
    assert sum(map(len, dropped.rows.values())) == 30
    cut, _ = _prepare(tmp_path / "b", tiny_llama, rows, overlength="truncate", split=split)
    assert cut.report["overlength"]["truncated"] == 1
    assert max(len(e.ids) for split in cut.encoded.values() for e in split) == 40


def _system_long_prompt_row(words: int = 40) -> dict:
    return {"messages": [{"role": "system", "content": "You reverse lists."},
                         {"role": "user", "content": "reverse: " + " ".join(["apple"] * words)},
                         {"role": "assistant", "content": "plum fig kiwi"}]}


def test_truncate_cuts_the_prompt_and_keeps_the_system_message_and_the_whole_answer(tmp_path, tiny_llama):
    from tunekit.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_llama))
    template = templates.resolve(tokenizer, "auto")
    row = _system_long_prompt_row()
    full, _ = templates.encode(tokenizer, template, row["messages"])
    ids, mask = conversations.fit(tokenizer, template, row["messages"], 40)
    assert len(full) > 40 >= len(ids)
    text = tokenizer.decode(ids)
    assert "You reverse lists." in text and "reverse: apple" in text
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained.startswith("plum fig kiwi") and trained.endswith("</s>")  # the whole answer and its end token


def test_truncate_drops_the_oldest_turns_first(tmp_path, tiny_llama):
    from tunekit.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_llama))
    template = templates.resolve(tokenizer, "auto")
    old = [{"role": "user", "content": "reverse: " + " ".join(["pear"] * 20)}, {"role": "assistant", "content": "pear"}]
    messages = old + _system_long_prompt_row(3)["messages"][1:]
    ids, mask = conversations.fit(tokenizer, template, messages, 40)
    text = tokenizer.decode(ids)
    assert "pear" not in text and "reverse: apple apple apple" in text
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]).startswith("plum fig kiwi")


def test_long_prompt_no_longer_loses_its_answer_and_a_long_system_message_still_errors(tmp_path, tiny_llama):
    long_prompt = {"messages": [{"role": "user", "content": "reverse: " + " ".join(["apple"] * 40)},
                                {"role": "assistant", "content": "apple"}]}
    prepared, _ = _prepare(tmp_path / "a", tiny_llama, reverse_rows(30) + [long_prompt], overlength="truncate")
    assert prepared.report["overlength"]["truncated"] == 1
    long_system = {"messages": [{"role": "system", "content": " ".join(["apple"] * 60)}, {"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "apple"}]}
    with pytest.raises(DataError, match="no assistant token is left"):
        _prepare(tmp_path / "b", tiny_llama, reverse_rows(30) + [long_system], overlength="truncate")


def _with_test_file(tmp_path, tiny_llama, test_rows, **data):
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "test.jsonl", test_rows)
    return _prepare(tmp_path, tiny_llama, reverse_rows(30), test="test.jsonl", **data)


def test_drop_refuses_test_rows_unless_asked_and_then_says_the_test_set_changed(tmp_path, tiny_llama):
    test_rows = reverse_rows(8, seed=5) + [_long_row(), _long_row() | {"messages": _long_row()["messages"][:1] + [{"role": "assistant", "content": "kiwi " * 30}]}]
    with pytest.raises(DataError) as exc:
        _with_test_file(tmp_path / "a", tiny_llama, test_rows, overlength="drop")
    msg = str(exc.value)
    assert "2 of 10 test examples are longer than model.max_length 40 (test.jsonl line 9, test.jsonl line 10)" in msg
    assert "set data.overlength_test: truncate" in msg
    assert not list((tmp_path / "a" / "ws" / "datasets").glob("*/meta.json"))  # a failed check freezes nothing
    prepared, _ = _with_test_file(tmp_path / "b", tiny_llama, test_rows, overlength="drop", overlength_test="drop")
    assert len(prepared.test) == 8
    assert ("the test set changed: 2 of 10 test examples were dropped as over-length, so test metrics are on 8 examples"
            in prepared.report["warnings"])


def test_preview_marks_exactly_the_trained_tokens(tmp_path, tiny_llama):
    prepared, tokenizer = _prepare(tmp_path, tiny_llama, reverse_rows(30))
    pieces = conversations.preview(tokenizer, prepared, 2)[0]
    trained = "".join(text for text, on in pieces if on)
    _, reference = conversations.prompt_and_reference(prepared.train[0])
    assert trained.startswith(reference) and trained.endswith("</s>")
    assert "user" in "".join(text for text, on in pieces if not on)


def test_duplicates_error_names_both_places(tmp_path, tiny_llama):
    rows = reverse_rows(30)
    with pytest.raises(DataError, match=r"train\.jsonl line 31: the same example as train\.jsonl line 1"):
        _prepare(tmp_path, tiny_llama, rows + rows[:1], duplicates="error")


def test_the_data_report_flags_personal_data_in_dialogues(tmp_path, tiny_llama):
    rows = reverse_rows(30)
    rows[3] = {"messages": [{"role": "user", "content": "my mail is ann@example.com"}, {"role": "assistant", "content": "noted"}]}
    rows[7] = {"messages": [{"role": "user", "content": "call me"}, {"role": "assistant", "content": "dial +1 (555) 123-4567"}]}
    prepared, _ = _prepare(tmp_path, tiny_llama, rows, split={"validation": 0.1, "test": 0.1, "seed": 1}, overlength="truncate")
    pii = prepared.report["pii"]
    assert sum(split["rows"] for split in pii.values()) == 2
    found = {e["at"]: e["kinds"] for split in pii.values() for e in split["examples"]}
    assert found == {"train.jsonl line 4": ["email"], "train.jsonl line 8": ["phone"]}
    assert any("hold personal data" in w for w in prepared.report["warnings"])
    assert "## Personal data (PII)" in conversations.report_markdown(prepared.report)
