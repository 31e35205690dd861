"""The data stage's public surface is pinned: other stages import only these names."""

from __future__ import annotations

import dataclasses

import pytest

import tunekit.data


def test_public_exports():
    assert tunekit.data.__all__ == ["Prepared", "PreparedData", "prepare", "read_rows", "render_report_markdown", "summary"]


def test_prepared_data_fields():
    fields = [f.name for f in dataclasses.fields(tunekit.data.PreparedData)]
    assert fields == ["train", "validation", "test", "labels", "fingerprint", "test_fingerprint", "directory", "report", "reused",
                      "task",  # "classification" or "regression" (float targets, no labels)
                      "multitask",  # data.task_column: labels "task:label"
                      "test_sample"]  # eval.max_test_rows: how many of how many test rows are scored


def test_metadata_columns_travel_with_the_rows_and_change_the_fingerprint(tmp_path):
    from tunekit.config import load_config
    from tunekit.data import prepare
    from tunekit.errors import DataError

    rows = "".join(f"text {i} {'card' if i % 2 else 'refund'},{'a' if i % 2 else 'b'},{'web' if i % 3 else ''}\n" for i in range(60))
    (tmp_path / "train.csv").write_text("text,label,channel\n" + rows)
    base = f"name: m\nworkspace: {tmp_path / 'ws'}\ndata: {{train: train.csv"
    (tmp_path / "plain.yaml").write_text(base + "}\n")
    (tmp_path / "meta.yaml").write_text(base + ", metadata_columns: [channel]}\neval: {slice_columns: [channel]}\n")
    plain, meta = prepare(load_config(tmp_path / "plain.yaml")), prepare(load_config(tmp_path / "meta.yaml"))
    assert "meta.channel" not in plain.test.column_names
    assert set(meta.train["meta.channel"]) == {"web", ""}
    assert meta.fingerprint != plain.fingerprint
    again = prepare(load_config(tmp_path / "meta.yaml"))
    assert again.reused and list(again.test["meta.channel"]) == list(meta.test["meta.channel"])
    (tmp_path / "bad.yaml").write_text(base + ", metadata_columns: [chanel]}\n")
    with pytest.raises(DataError, match=r'column "chanel" \(from `data.metadata_columns`\) not found \(did you mean "channel"\?\)'):
        prepare(load_config(tmp_path / "bad.yaml"))
