"""Every bad input is a DataError naming the file, the line (or record) and the column, and the fix."""

from __future__ import annotations

import json

import pytest

from tunekit.data import prepare, read_rows
from tunekit.errors import DataError


def _error(cfg, path="train.csv", key="data.train") -> str:
    with pytest.raises(DataError) as info:
        read_rows(path, cfg, key)
    return str(info.value)


# 1. malformed rows ------------------------------------------------------------------------------

def test_csv_row_with_wrong_field_count_names_line_and_counts(project):
    project.write("train.csv", "text,label\ngood,a\nbad,row,extra\nfine,b\n")
    msg = _error(project.config(train="train.csv"))
    assert "train.csv line 3" in msg
    assert "expected 2 fields (text, label), found 3" in msg


def test_several_malformed_rows_are_reported_at_once(project):
    project.write("train.csv", "text,label\nx,y,z\nok,a\nlonely\n")
    msg = _error(project.config(train="train.csv"))
    assert "2 problems" in msg
    assert "train.csv line 2" in msg and "found 3" in msg
    assert "train.csv line 4" in msg and "found 1" in msg


def test_malformed_rows_and_bad_values_are_reported_together(project):
    project.write("train.csv", "text,label\nhi,a\n,b\nyo,\nbad,row,x\n")
    msg = _error(project.config(train="train.csv"))
    assert "3 problems" in msg
    for expected in ("line 5: expected 2 fields", 'line 3: column "text" is empty', 'line 4: column "label" (the label) is empty'):
        assert expected in msg


def test_only_the_first_ten_problems_are_listed_and_the_rest_counted(project):
    project.write("train.csv", "text,label\n" + "".join(f"row {i},\n" for i in range(15)))
    msg = _error(project.config(train="train.csv"))
    assert "15 problems" in msg
    assert "train.csv line 11:" in msg and "train.csv line 12:" not in msg
    assert "... and 5 more" in msg


def test_multiline_quoted_field_reports_the_line_the_record_starts_on(project):
    project.write("train.csv", 'text,label\n"two\nlines",a\n"ok",b,extra\n')
    msg = _error(project.config(train="train.csv"))
    assert "train.csv line 4" in msg


def test_jsonl_line_that_is_not_json_or_not_an_object(project):
    project.write("train.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label"\n["a", "list"]\n')
    msg = _error(project.config(train="train.jsonl"), "train.jsonl")
    assert "train.jsonl line 2: not valid JSON" in msg
    assert "train.jsonl line 3: expected a JSON object" in msg and "a list" in msg


def test_json_that_is_not_a_list_of_objects(project):
    project.write("train.json", json.dumps({"rows": [{"text": "a", "label": "x"}]}))
    msg = _error(project.config(train="train.json"), "train.json")
    assert "train.json line 1" in msg and "expected a JSON list of objects" in msg and "rows" in msg


def test_json_list_item_that_is_not_an_object_names_record_and_line(project):
    project.write("train.json", '[\n  {"text": "a", "label": "x"},\n  "oops"\n]\n')
    msg = _error(project.config(train="train.json"), "train.json")
    assert "train.json record 2 (line 3)" in msg and "a string" in msg


def test_invalid_json_names_line(project):
    project.write("train.json", '[\n  {"text": "a", "label": "x"},\n  {"text": }\n]\n')
    msg = _error(project.config(train="train.json"), "train.json")
    assert "train.json line 3: not valid JSON" in msg


# 2. missing column ------------------------------------------------------------------------------

def test_missing_text_column_lists_existing_columns_and_config_key(project):
    project.write("train.csv", "sentence,label\nhello,a\n")
    msg = _error(project.config(train="train.csv"))
    assert "train.csv line 1 (header)" in msg
    assert 'column "text" (from `data.text_column`) not found' in msg
    assert '"sentence", "label"' in msg


def test_missing_label_column_suggests_a_close_name(project):
    project.write_jsonl("train.jsonl", [{"text": "a", "labels": "x"}])
    msg = _error(project.config(train="train.jsonl"), "train.jsonl")
    assert "train.jsonl" in msg and "`data.label_column`" in msg and 'did you mean "labels"' in msg


def test_missing_text_pair_column(project):
    project.write("train.csv", "text,label\nhello,a\n")
    msg = _error(project.config(train="train.csv", text_pair_column="hypothesis"))
    assert 'column "hypothesis" (from `data.text_pair_column`)' in msg and "line 1" in msg


# 3. empty text, 4. missing label ----------------------------------------------------------------

def test_empty_text_names_file_line_and_column(project):
    project.write("train.csv", "text,label\nhello,a\n   ,b\n")
    msg = _error(project.config(train="train.csv"))
    assert 'train.csv line 3: column "text" is empty' in msg


def test_empty_text_pair_is_an_error_too(project):
    project.write("train.csv", "premise,hypothesis,label\nit rains,,yes\n")
    msg = _error(project.config(train="train.csv", text_column="premise", text_pair_column="hypothesis"))
    assert 'train.csv line 2: column "hypothesis" is empty' in msg


def test_missing_label_names_file_line_and_column(project):
    project.write("train.csv", "text,label\nhello,a\nworld,\n")
    msg = _error(project.config(train="train.csv"))
    assert 'train.csv line 3: column "label" (the label) is empty' in msg


def test_null_label_in_jsonl_and_parquet(project):
    import pyarrow as pa
    import pyarrow.parquet as pq

    project.write_jsonl("train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": None}])
    assert 'train.jsonl line 2: column "label"' in _error(project.config(train="train.jsonl"), "train.jsonl")
    pq.write_table(pa.table({"text": ["a", "b"], "label": [1.0, float("nan")]}), project.root / "train.parquet")
    assert 'train.parquet row 2: column "label"' in _error(project.config(train="train.parquet"), "train.parquet")


# 5. label unseen in train -----------------------------------------------------------------------

def test_test_file_label_never_seen_in_train(project):
    project.labelled_csv("train.csv", {"pos": 3, "neg": 3})
    project.write("valid.csv", "text,label\nfine,pos\n")
    project.write("test.csv", "text,label\nfine,pos\nodd,zzz\n")
    cfg = project.config(train="train.csv", validation="valid.csv", test="test.csv")
    with pytest.raises(DataError) as info:
        prepare(cfg)
    msg = str(info.value)
    assert 'test.csv line 3: column "label" has label "zzz"' in msg
    assert 'known labels: "neg", "pos"' in msg


# 6. encoding ------------------------------------------------------------------------------------

def test_latin1_file_fails_under_utf8_with_line_byte_and_hint(project):
    project.write("train.csv", "text,label\nhello,a\ncafé au lait,b\n".encode("latin-1"))
    msg = _error(project.config(train="train.csv"))
    assert "train.csv line 3" in msg and "0xe9" in msg
    assert "set `data.encoding` (e.g. latin-1 or cp1252) in the config, or re-save the file as UTF-8" in msg


def test_latin1_file_reads_with_encoding_latin1(project):
    project.write("train.csv", "text,label\nhello,a\ncafé au lait,b\n".encode("latin-1"))
    rows = read_rows("train.csv", project.config(train="train.csv", encoding="latin-1"))
    assert rows[1]["text"] == "café au lait"


def test_unknown_encoding_names_the_config_key(project):
    project.write("train.csv", "text,label\nhello,a\n")
    assert "data.encoding: unknown encoding 'klingon'" in _error(project.config(train="train.csv", encoding="klingon"))


# 7. empty file ----------------------------------------------------------------------------------

def test_zero_byte_file(project):
    project.write("train.csv", "")
    msg = _error(project.config(train="train.csv"))
    assert "train.csv: the file is empty (0 bytes)" in msg and "data.train" in msg


def test_header_only_file(project):
    project.write("train.csv", "text,label\n")
    assert "train.csv: has a header row (line 1) but no data rows" in _error(project.config(train="train.csv"))


def test_empty_json_list(project):
    project.write("train.json", "[]")
    assert "train.json: contains no rows" in _error(project.config(train="train.json"), "train.json")


# 8. too few rows of a class for the split -------------------------------------------------------

def test_class_too_small_for_two_splits(project):
    project.labelled_csv("train.csv", {"a": 10, "b": 10, "c": 2})
    with pytest.raises(DataError) as info:
        prepare(project.config(train="train.csv"))
    msg = str(info.value)
    assert 'train.csv: label "c" has only 2 row(s) (line 22, line 23)' in msg
    assert "needs at least 3 per label" in msg
    assert "merge it" in msg and "`data.test` and `data.validation`" in msg


def test_two_rows_are_enough_when_only_validation_is_split_off(project):
    project.labelled_csv("train.csv", {"a": 10, "b": 10, "c": 2})
    project.write("test.csv", "text,label\nt1,a\nt2,b\nt3,c\n")
    data = prepare(project.config(train="train.csv", test="test.csv", split={"validation": 0.2}))
    assert len(data.validation) == 5 and len(data.test) == 3


def test_split_too_small_for_the_number_of_labels(project):
    project.labelled_csv("train.csv", {label: 3 for label in "abcde"})
    with pytest.raises(DataError) as info:
        prepare(project.config(train="train.csv"))
    msg = str(info.value)
    assert "train.csv" in msg and "`data.split.test` holds out 3 of 15 rows" in msg and "5 labels" in msg


# reading the config's paths ---------------------------------------------------------------------

def test_missing_file_names_config_key_and_resolved_path(project):
    cfg = project.config(train="nowhere/train.csv")
    with pytest.raises(DataError) as info:
        prepare(cfg)
    assert "data.train: file not found" in str(info.value)
    assert str(project.root / "nowhere" / "train.csv") in str(info.value)


def test_unknown_extension_says_to_set_data_format(project):
    project.write("train.txt", "text,label\nhello,a\n")
    assert "set `data.format`" in _error(project.config(train="train.txt"), "train.txt")


def test_single_label_training_file(project):
    project.labelled_csv("train.csv", {"only": 5})
    with pytest.raises(DataError, match="needs at least two labels"):
        prepare(project.config(train="train.csv"))
