"""Every supported format reads to the same canonical rows."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunekit.data import read_rows

ROWS = [
    {"text": "I lost my card, help", "label": "lost_card"},
    {"text": 'She said "hi"\tand left', "label": "other"},
    {"text": "Wo ist meine Karte? ünïcødé", "label": "lost_card"},
]
EXPECTED = [(row["text"], row["label"]) for row in ROWS]


def _csv(delimiter: str, header: bool = True) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    if header:
        writer.writerow(["label", "text"])
    writer.writerows([[row["label"], row["text"]] for row in ROWS])
    return out.getvalue()


def _write(project, fmt: str):
    if fmt == "csv":
        return project.write("train.csv", _csv(",")), {}
    if fmt == "tsv":  # written by a CSV writer: the text holding a tab is quoted, so the file says `quoting: csv`
        return project.write("train.tsv", _csv("\t")), {"quoting": "csv"}
    if fmt == "headerless":
        return project.write("train.csv", _csv(",", header=False)), {"header": False, "columns": ["label", "text"]}
    if fmt == "jsonl":
        return project.write_jsonl("train.jsonl", ROWS), {}
    if fmt == "json":
        return project.write("train.json", json.dumps(ROWS, indent=2)), {}
    pq.write_table(pa.Table.from_pylist(ROWS), project.root / "train.parquet")
    return project.root / "train.parquet", {}


@pytest.mark.parametrize("fmt", ["csv", "tsv", "headerless", "jsonl", "json", "parquet"])
def test_each_format_reads_to_the_same_canonical_rows(project, fmt):
    path, extra = _write(project, fmt)
    rows = read_rows(path.name, project.config(train=path.name, **extra))
    assert [(row["text"], row["label"]) for row in rows] == EXPECTED
    assert all(set(row) == {"id", "text", "label", "_at"} for row in rows)
    assert len({row["id"] for row in rows}) == 3


def test_ids_and_locations_follow_lines(project):
    project.write("train.csv", 'text,label\n\n"multi\nline",a\nplain,b\n')
    rows = read_rows("train.csv", project.config(train="train.csv"))
    assert [(row["id"], row["_at"]) for row in rows] == [("train-3", "line 3"), ("train-5", "line 5")]
    assert rows[0]["text"] == "multi\nline"


def test_json_records_know_their_line(project):
    project.write("train.json", '[{"text": "a", "label": "x"},\n\n {"text": "b", "label": "y"}]')
    rows = read_rows("train.json", project.config(train="train.json"))
    assert [row["_at"] for row in rows] == ["record 1 (line 1)", "record 2 (line 3)"]


def test_explicit_format_overrides_the_extension(project):
    project.write("train.txt", "text\tlabel\nhello\ta\n")
    rows = read_rows("train.txt", project.config(train="train.txt", format="tsv"))
    assert rows[0]["text"] == "hello"


def test_labels_become_strings_and_integral_floats_integers(project):
    project.write_jsonl("train.jsonl", [{"text": "a", "label": 3}, {"text": "b", "label": 1.0},
                                        {"text": "c", "label": 0.5}, {"text": "d", "label": " pos "}])
    rows = read_rows("train.jsonl", project.config(train="train.jsonl"))
    assert [row["label"] for row in rows] == ["3", "1", "0.5", "pos"]


def test_text_pair_and_custom_columns(project):
    project.write("train.csv", "premise,hypothesis,gold\nit rains,it is wet,entail\n")
    cfg = project.config(train="train.csv", text_column="premise", text_pair_column="hypothesis", label_column="gold")
    assert read_rows("train.csv", cfg) == [
        {"id": "train-2", "text": "it rains", "text_pair": "it is wet", "label": "entail", "_at": "line 2"}
    ]


def test_utf8_byte_order_mark_is_not_part_of_the_first_column(project):
    project.write("train.csv", "\ufefftext,label\nhello,a\n")
    assert read_rows("train.csv", project.config(train="train.csv"))[0]["text"] == "hello"


def test_crlf_line_endings(project):
    project.write("train.csv", "text,label\r\nhello,a\r\nworld,b\r\n")
    rows = read_rows("train.csv", project.config(train="train.csv"))
    assert [(row["text"], row["label"], row["_at"]) for row in rows] == [("hello", "a", "line 2"), ("world", "b", "line 3")]
