"""One freeze for every task: Parquet, written through ``store.write_frozen`` into a temporary folder
renamed into place; generation folders frozen as JSONL before still read under their fingerprint."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tunekit.config import load_config
from tunekit.data import conversations, prepare, store, versions
from tunekit.errors import DataError


def _chats(n: int, meta: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"question {i}"},
                            {"role": "assistant", "content": f"answer {i}", "weight": 1}]}
        if meta:
            row["source"] = "forum" if i % 2 else "mail"
        rows.append(row)
    return rows


def _generation_config(project, meta: bool = False):
    project.write_jsonl("chat.jsonl", _chats(30, meta))
    extra = ", metadata_columns: [source]" if meta else ""
    (project.root / "gen.yaml").write_text(f"name: g\ntask: generation\nworkspace: {project.root / 'ws'}\n"
                                           f"data: {{train: chat.jsonl{extra}}}\n")
    return load_config(project.root / "gen.yaml")


def _freeze_generation(cfg):
    sources = store.source_files(cfg)
    rows, duplicates = conversations._read_and_split(cfg, {s.role: s.path for s in sources})
    return rows, conversations._freeze(cfg, store.source_key(cfg, sources), sources, rows, duplicates)


@pytest.mark.parametrize("meta", [False, True])
def test_generation_splits_are_frozen_as_parquet_and_read_back_exactly(project, meta):
    cfg = _generation_config(project, meta)
    rows, directory = _freeze_generation(cfg)
    assert sorted(p.name for p in directory.iterdir()) == ["labels.json", "meta.json", "test.parquet", "train.parquet",
                                                          "validation.parquet"]
    assert not list(directory.glob("*.jsonl"))
    schema = pq.read_schema(directory / "train.parquet")
    assert schema.field("messages").type.value_type.names == ["role", "content", "weight"]
    assert ("meta" in schema.names) is meta
    loaded, saved = conversations.read_frozen(directory)
    assert loaded == rows  # the very dicts that were frozen: messages, origin and metadata
    assert saved["fingerprint"] == store.fingerprint({n: [store.conversation_canonical(r) for r in rows[n]] for n in store.SPLITS}, [])
    assert all(r["meta"]["source"] in ("forum", "mail") for r in loaded["train"]) if meta else all("meta" not in r for r in loaded["train"])


def test_a_generation_folder_frozen_as_jsonl_before_is_still_read_under_its_fingerprint(project):
    cfg = _generation_config(project)
    rows, directory = _freeze_generation(cfg)
    fingerprint = json.loads((directory / "meta.json").read_text())["fingerprint"]
    for name in store.SPLITS:  # what older tunekit wrote: one JSON row per line, no Parquet
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[name]))
        (directory / f"{name}.parquet").unlink()
    assert conversations.frozen_directory(cfg, store.source_key(cfg, store.source_files(cfg))) == directory
    loaded, meta = conversations.read_frozen(directory)
    assert loaded == rows and meta["fingerprint"] == fingerprint

    (directory / "test.jsonl").write_text("".join(json.dumps({**r, "id": "edited"}) + "\n" for r in rows["test"]))
    with pytest.raises(DataError, match="no longer match their fingerprint"):
        conversations.read_frozen(directory)


def test_forget_writes_an_old_jsonl_generation_folder_again_as_parquet_with_its_metadata(project):
    cfg = _generation_config(project, meta=True)
    rows, directory = _freeze_generation(cfg)
    for name in store.SPLITS:
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[name]))
        (directory / f"{name}.parquet").unlink()

    result = versions.forget(project.root / "ws", "text~=question 1\\b", None, reason="request 9")

    assert result.rows == 1
    new = result.datasets[0].directory
    assert (new / "train.parquet").is_file() and not list(new.glob("*.jsonl"))
    kept, meta = conversations.read_frozen(new)  # metadata rows verify against the new fingerprint
    assert meta["fingerprint"] == result.datasets[0].new_fingerprint
    assert sum(map(len, kept.values())) == 29 and all("meta" in r for r in kept["train"])


def test_a_crash_while_freezing_leaves_no_half_written_split(project, monkeypatch):
    project.labelled_csv("train.csv", {"a": 10, "b": 10})
    written = []

    def dies_on_the_second_split(table, path, *args, **kwargs):
        written.append(path)
        if len(written) == 2:
            raise OSError("disk full")
        real(table, path, *args, **kwargs)

    real = pq.write_table
    monkeypatch.setattr(pq, "write_table", dies_on_the_second_split)
    with pytest.raises(OSError, match="disk full"):
        prepare(project.config(train="train.csv"))
    root = project.root / "ws" / "datasets"
    assert written[0].parent.name.startswith(".")  # the splits were written in a temporary folder
    assert not root.exists() or not any(root.iterdir())  # nothing left: no folder, no index entry, no changelog line

    monkeypatch.setattr(pq, "write_table", real)
    data = prepare(project.config(train="train.csv"))
    assert not data.reused and (data.directory / "test.parquet").is_file()


def test_a_crash_while_freezing_conversations_leaves_no_half_written_split(project, monkeypatch):
    cfg = _generation_config(project)
    real, calls = pq.write_table, []

    def dies(table, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(table, path, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", dies)
    with pytest.raises(OSError):
        _freeze_generation(cfg)
    root = project.root / "ws" / "datasets"
    assert not root.exists() or not any(root.iterdir())
    assert conversations.frozen_directory(cfg, store.source_key(cfg, store.source_files(cfg))) is None
