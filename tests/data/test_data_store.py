"""Frozen splits: written once under their fingerprint, reused while the inputs are unchanged."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel

from tunekit.data import prepare
from tunekit.data.store import fingerprint, split_fingerprint
from tunekit.errors import DataError

PER_LABEL = {"neg": 10, "pos": 12, "neutral": 8}


def test_first_prepare_freezes_splits_with_provenance(project):
    path = project.labelled_csv("train.csv", PER_LABEL)
    data = prepare(project.config(train="train.csv"))
    assert not data.reused
    assert data.labels == ["neg", "neutral", "pos"]
    assert data.directory == project.root / "ws" / "datasets" / data.fingerprint[:16]
    for name in ("train.parquet", "validation.parquet", "test.parquet", "labels.json", "meta.json", "report.json", "report.md"):
        assert (data.directory / name).is_file(), name
    meta = json.loads((data.directory / "meta.json").read_text())
    assert meta["fingerprint"] == data.fingerprint and meta["test_fingerprint"] == data.test_fingerprint
    assert meta["sources"] == [{"role": "train", "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                "bytes": path.stat().st_size}]
    assert meta["rows"] == {"train": 21, "validation": 3, "test": 6}
    assert meta["split"]["made"] == ["test", "validation"] and meta["split"]["seed"] == 13
    assert json.loads((data.directory / "labels.json").read_text()) == data.labels
    index = json.loads((project.root / "ws" / "datasets" / "index.json").read_text())
    assert list(index.values()) == [data.fingerprint]


def test_datasets_have_canonical_columns_and_label_ids(project):
    project.labelled_csv("train.csv", PER_LABEL)
    data = prepare(project.config(train="train.csv"))
    assert data.train.column_names == ["id", "text", "label"]
    assert data.train.features["label"] == ClassLabel(names=["neg", "neutral", "pos"])
    row = data.train[0]
    assert isinstance(row["label"], int) and row["text"].startswith(f"text {data.labels[row['label']]} ")


def test_text_pair_column_only_when_configured(project):
    lines = ["p,h,label"] + [f"premise {i},hypothesis {i},{'yes' if i % 2 else 'no'}" for i in range(20)]
    project.write("pairs.csv", "\n".join(lines) + "\n")
    data = prepare(project.config(train="pairs.csv", text_column="p", text_pair_column="h"))
    assert data.test.column_names == ["id", "text", "text_pair", "label"]
    assert all(row["text_pair"] == row["text"].replace("premise", "hypothesis") for row in data.test)


def test_second_prepare_reuses_the_frozen_splits(project):
    project.labelled_csv("train.csv", PER_LABEL)
    first = prepare(project.config(train="train.csv"))
    second = prepare(project.config(train="train.csv"))
    assert second.reused
    assert (second.fingerprint, second.test_fingerprint, second.directory) == (first.fingerprint, first.test_fingerprint, first.directory)
    assert second.train.to_list() == first.train.to_list()
    assert second.test.features == first.test.features
    assert second.report["rows"] == first.report["rows"]


def test_settings_that_do_not_change_rows_keep_the_frozen_splits(project):
    project.labelled_csv("train.csv", PER_LABEL)
    first = prepare(project.config(train="train.csv"))
    second = prepare(project.config(train="train.csv", model={"max_length": 64}))
    assert second.reused and second.fingerprint == first.fingerprint
    assert second.report["lengths"]["max_length"] == 64


def test_changed_file_gives_a_new_fingerprint_and_keeps_the_old_folder(project):
    project.labelled_csv("train.csv", PER_LABEL)
    first = prepare(project.config(train="train.csv"))
    project.labelled_csv("train.csv", {**PER_LABEL, "pos": 13})
    second = prepare(project.config(train="train.csv"))
    assert not second.reused
    assert second.fingerprint != first.fingerprint and second.directory != first.directory
    assert (first.directory / "meta.json").is_file()
    assert len(json.loads((project.root / "ws" / "datasets" / "index.json").read_text())) == 2


def test_changed_split_setting_gives_new_splits(project):
    project.labelled_csv("train.csv", PER_LABEL)
    first = prepare(project.config(train="train.csv"))
    second = prepare(project.config(train="train.csv", split={"seed": 7}))
    assert not second.reused and second.fingerprint != first.fingerprint


def test_test_fingerprint_depends_only_on_test_rows(project):
    project.labelled_csv("train.csv", PER_LABEL)
    project.labelled_csv("test.csv", {"neg": 2, "pos": 2}, prefix="held out")
    first = prepare(project.config(train="train.csv", test="test.csv"))
    project.labelled_csv("train.csv", {**PER_LABEL, "neg": 11})
    second = prepare(project.config(train="train.csv", test="test.csv"))
    assert second.fingerprint != first.fingerprint
    assert second.test_fingerprint == first.test_fingerprint


def test_fingerprint_is_over_canonical_rows_not_file_bytes(project):
    rows = [{"text": f"text {label} {i}", "label": label} for label, n in PER_LABEL.items() for i in range(n)]
    # a headerless CSV and a JSONL file with the same stem number rows alike, so the ids match too
    project.write("train.csv", "".join(f"{row['text']},{row['label']}\n" for row in rows))
    csv_data = prepare(project.config(train="train.csv", header=False, columns=["text", "label"]))
    project.write_jsonl("train.jsonl", rows)
    jsonl_data = prepare(project.config(train="train.jsonl"))
    assert not jsonl_data.reused
    assert jsonl_data.fingerprint == csv_data.fingerprint and jsonl_data.directory == csv_data.directory


def test_fingerprint_function_is_stable_and_order_sensitive():
    rows = {"train": [{"id": "1", "text": "a", "label": "x"}, {"id": "2", "text": "b", "label": "y"}],
            "validation": [{"id": "3", "text": "c", "label": "x"}], "test": [{"id": "4", "text": "d", "label": "y"}]}
    fp = fingerprint(rows, ["x", "y"])
    assert fp == fingerprint(json.loads(json.dumps(rows)), ["x", "y"]) and len(fp) == 64
    assert fp != fingerprint({**rows, "train": rows["train"][::-1]}, ["x", "y"])
    assert fp != fingerprint(rows, ["x", "y", "z"])
    assert split_fingerprint(rows["test"]) != split_fingerprint([{**rows["test"][0], "label": "x"}])


def test_edited_frozen_split_is_detected(project):
    project.labelled_csv("train.csv", PER_LABEL)
    data = prepare(project.config(train="train.csv"))
    table = pq.read_table(data.directory / "test.parquet")
    texts = table.column("text").to_pylist()
    edited = table.set_column(table.column_names.index("text"), "text", pa.array(["changed"] + texts[1:]))
    pq.write_table(edited, data.directory / "test.parquet")
    with pytest.raises(DataError, match="no longer match their fingerprint"):
        prepare(project.config(train="train.csv"))


def test_corrupt_index_is_rebuilt(project):
    project.labelled_csv("train.csv", PER_LABEL)
    first = prepare(project.config(train="train.csv"))
    (project.root / "ws" / "datasets" / "index.json").write_text("{not json")
    second = prepare(project.config(train="train.csv"))
    assert not second.reused and second.fingerprint == first.fingerprint
    assert prepare(project.config(train="train.csv")).reused
