"""Public datasets as they are distributed, read from config alone (issue 18): one small file of each shape.

Every test writes a file the way the public set ships it and pins the rows it must read, or the
error (file, line, fix) it must give. Nothing is altered or dropped without a word.
"""

from __future__ import annotations

import json

import pytest

from tunekit.data import read_rows
from tunekit.errors import ConfigError, DataError


def _texts(rows):
    return [(row["text"], row["label"]) for row in rows]


# ---- item 1: TSV is unquoted by convention ----------------------------------------------------------

GLUE_TSV = ('\ufeffsentence\tlabel\n'
            '"Yes," he said, "it is."\t1\n'
            'a "quoted" word\t0\n'
            '"an opening quote that never closes\t1\n'
            'the next line\t0\n')


def test_glue_tsv_with_bom_keeps_every_quote(project):
    project.write("train.tsv", GLUE_TSV.encode("utf-8"))
    rows = read_rows("train.tsv", project.config(train="train.tsv", text_column="sentence"))
    assert _texts(rows) == [('"Yes," he said, "it is."', "1"), ('a "quoted" word', "0"),
                            ('"an opening quote that never closes', "1"), ("the next line", "0")]
    assert [row["_at"] for row in rows] == ["line 2", "line 3", "line 4", "line 5"]


def test_tsv_read_with_csv_quoting_is_an_error_naming_the_line_not_a_merge(project):
    project.write("train.tsv", GLUE_TSV)
    with pytest.raises(DataError) as exc:
        read_rows("train.tsv", project.config(train="train.tsv", text_column="sentence", quoting="csv"))
    msg = str(exc.value)
    assert "train.tsv line 2" in msg and "with quoting" in msg
    assert "set `data.quoting: none`" in msg


def test_tsv_field_holding_a_tab_names_the_line_and_the_quoting_option(project):
    project.write("train.tsv", 'text\tlabel\nplain\ta\n"with\ttab"\tb\n')
    with pytest.raises(DataError) as exc:
        read_rows("train.tsv", project.config(train="train.tsv"))
    msg = str(exc.value)
    assert "train.tsv line 3: expected 2 fields (text, label), found 3" in msg
    assert "read without quoting" in msg and "set `data.quoting: csv` (or `data.train.quoting`) (this file does read cleanly with CSV quoting)" in msg
    assert "quote values that contain it" not in msg  # the old hint, wrong for TSV
    rows = read_rows("train.tsv", project.config(train="train.tsv", quoting="csv"))
    assert _texts(rows) == [("plain", "a"), ("with\ttab", "b")]


def test_tsv_with_a_stray_tab_does_not_claim_csv_quoting_would_help(project):
    project.write("train.tsv", "text\tlabel\nplain\ta\ntwo\ttabs\tb\n")
    with pytest.raises(DataError) as exc:
        read_rows("train.tsv", project.config(train="train.tsv"))
    assert "train.tsv line 3: expected 2 fields" in str(exc.value) and "reads cleanly with CSV quoting" not in str(exc.value)


def test_csv_written_tsv_with_doubled_quotes_asks_which_reading_is_meant(project):
    project.write("train.tsv", 'text\tlabel\n"She said ""hi"""\ta\nplain\tb\n')
    with pytest.raises(DataError) as exc:
        read_rows("train.tsv", project.config(train="train.tsv"))
    assert "train.tsv line 2: column \"text\"" in str(exc.value) and "as CSV writers quote" in str(exc.value)
    assert _texts(read_rows("train.tsv", project.config(train="train.tsv", quoting="csv")))[0] == ('She said "hi"', "a")
    assert _texts(read_rows("train.tsv", project.config(train="train.tsv", quoting="none")))[0] == ('"She said ""hi"""', "a")


def test_csv_text_after_a_closing_quote_is_an_error_not_a_silent_change(project):
    project.write("train.csv", 'text,label\nfine,a\n"hi" there,b\n')
    with pytest.raises(DataError, match=r"train\.csv line 3: cannot parse as CSV with quoting .*`data\.quoting: none`"):
        read_rows("train.csv", project.config(train="train.csv"))
    rows = read_rows("train.csv", project.config(train="train.csv", quoting="none"))
    assert _texts(rows) == [("fine", "a"), ('"hi" there', "b")]


def test_quote_that_swallows_lines_names_where_it_starts_and_ends(project):
    project.write("train.tsv", 'text\tlabel\n"open\ta\nnext\tb\nlast"\tc\n')  # with quotes: one record of 3 lines
    with pytest.raises(DataError) as exc:
        read_rows("train.tsv", project.config(train="train.tsv", quoting="csv"))
    assert "train.tsv line 2: the record runs on to line 4" in str(exc.value)
    project.write("train.csv", 'text,label\n"open,a\nnext,b\n')  # the quote never closes: the record is one field
    with pytest.raises(DataError) as exc:
        read_rows("train.csv", project.config(train="train.csv"))
    assert "train.csv line 2: a double quote opens a field here that is still open at the end of the file" in str(exc.value)


def test_csv_with_multi_line_quoted_fields_reads_them_whole(project):
    project.write("train.csv", 'article,label\n"first line\nsecond, line",a\nshort,b\n')
    rows = read_rows("train.csv", project.config(train="train.csv", text_column="article"))
    assert _texts(rows) == [("first line\nsecond, line", "a"), ("short", "b")]
    assert [row["_at"] for row in rows] == ["line 2", "line 4"]


# ---- item 2: format options per file, delimiter, joined text columns, label map ---------------------

def test_headerless_csv_train_and_headed_test_with_per_file_options(project):
    project.write("train.csv", '3,"Wall St. Bears Claw Back","Short-sellers, Wall Street\'s dwindling band"\n'
                               '2,"Sox win","Boston beat New York"\n')
    project.write("test.csv", "klass;headline;body\n1;Peace talks;Leaders met\n")
    cfg = project.config(train={"path": "train.csv", "header": False, "columns": ["klass", "headline", "body"]},
                         test={"path": "test.csv", "delimiter": ";"},
                         text_column=["headline", "body"], label_column="klass",
                         label_map={1: "World", 2: "Sports", 3: "Business"})
    train = read_rows("train.csv", cfg, "data.train")
    assert _texts(train) == [("Wall St. Bears Claw Back | Short-sellers, Wall Street's dwindling band", "Business"),
                             ("Sox win | Boston beat New York", "Sports")]
    assert _texts(read_rows("test.csv", cfg, "data.test")) == [("Peace talks | Leaders met", "World")]


def test_label_missing_from_the_label_map_names_line_and_key(project):
    project.write("train.csv", "text,label\na,1\nb,7\n")
    with pytest.raises(DataError, match=r'train\.csv line 3: column "label" has label "7", which `data.label_map` does not name'):
        read_rows("train.csv", project.config(train="train.csv", label_map={"1": "World"}))


def test_per_file_headerless_needs_its_columns(project):
    with pytest.raises(ConfigError, match=r"`data.test.header` is false, so list the column names"):
        project.config(train="train.csv", test={"path": "t.csv", "header": False})


def test_label_and_text_lines_in_latin1(project):
    """TREC's shape: `LABEL:fine text with spaces`, one per line, in Latin-1."""
    project.write("train.label", "DESC:manner How did serfdom develop in Russia ?\nHUM:ind Who was Caf\u00e9 's owner ?\n".encode("latin-1"))
    cfg = project.config(train="train.label", format="csv", header=False, columns=["label", "text"], delimiter=" ",
                         quoting="none", rest_in_last_column=True, encoding="latin-1")
    assert _texts(read_rows("train.label", cfg)) == [("How did serfdom develop in Russia ?", "DESC:manner"),
                                                     ("Who was Caf\u00e9 's owner ?", "HUM:ind")]


def test_fallback_column_fills_an_empty_value_and_names_both_when_both_are_empty(project):
    project.write("train.csv", "text,alt,label\nhello,,a\n,from alt,b\n,,c\n")
    with pytest.raises(DataError, match=r'line 4: column "text" and its fallback "alt" is empty'):
        read_rows("train.csv", project.config(train="train.csv", fallback_columns={"text": "alt"}))
    project.write("train.csv", "text,alt,label\nhello,,a\n,from alt,b\n")
    assert _texts(read_rows("train.csv", project.config(train="train.csv", fallback_columns={"text": "alt"}))) == [
        ("hello", "a"), ("from alt", "b")]


# ---- issue 18 item 9, issue 17 item 3: ids -----------------------------------------------------------

def test_ids_are_prefixed_by_the_split_the_file_was_given_for(project):
    project.labelled_csv("test.csv", {"a": 2, "b": 2})
    project.labelled_csv("tickets.csv", {"a": 1})
    cfg = project.config(train="test.csv")
    assert [row["id"] for row in read_rows("test.csv", cfg, "data.train")] == ["train-test-2", "train-test-3", "train-test-4", "train-test-5"]
    assert [row["id"] for row in read_rows("tickets.csv", cfg, "data.train")] == ["train-tickets-2"]
    assert [row["id"] for row in read_rows("test.csv", cfg, "data.test")][:1] == ["test-2"]


def test_id_column_keeps_ids_and_refuses_duplicates(project):
    project.write("train.csv", "id,text,label\ntickets-5,hello,a\ntickets-9,bye,b\n")
    rows = read_rows("train.csv", project.config(train="train.csv", id_column="id"))
    assert [row["id"] for row in rows] == ["tickets-5", "tickets-9"]
    project.write("train.csv", "id,text,label\nx,hello,a\nx,bye,b\n")
    with pytest.raises(DataError, match=r'line 3: column "id" has the id "x", which line 2 has too'):
        read_rows("train.csv", project.config(train="train.csv", id_column="id"))


def test_json_list_with_extra_keys_and_nulls_reads_with_metadata_and_fallback(project):
    rows = [{"id": 1, "question": "what?", "title": None, "label": "q", "extra": {"k": 1}},
            {"id": 2, "question": None, "title": "the title", "label": "r", "extra": None}]
    project.write("train.json", json.dumps(rows))
    cfg = project.config(train="train.json", text_column="question", fallback_columns={"question": "title"},
                         id_column="id", metadata_columns=["extra"])
    read = read_rows("train.json", cfg)
    assert [(r["id"], r["text"], r["label"], r["meta.extra"]) for r in read] == [("1", "what?", "q", '{"k": 1}'), ("2", "the title", "r", "")]


# ---- item 3: generation data in every format ----------------------------------------------------------

def _conversations(path, cfg, key="data.train", min_examples=1):
    from tunekit.data.chat import read_conversations
    from tunekit.data.prepare import read_options

    d = cfg.data
    return read_conversations(path, d.layout, d.system_prompt, d.prompt_column, d.completion_column, d.encoding, min_examples,
                              options=read_options(cfg, key), metadata_columns=d.metadata_columns, fallback_columns=d.fallback_columns)


def _pairs(rows):
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]


def test_summarisation_csv_with_multi_line_fields(project):
    path = project.write("train.csv", 'document,summary\n"Para one, with a comma.\nPara two.","Two paras."\nShort doc,Short.\n')
    cfg = project.config(train="train.csv", prompt_column="document", completion_column="summary")
    rows = _conversations(path, cfg)
    assert _pairs(rows) == [("Para one, with a comma.\nPara two.", "Two paras."), ("Short doc", "Short.")]
    assert [r["at"] for r in rows] == ["line 2", "line 4"]


def test_tsv_and_parquet_prompt_completion_and_alpaca(project):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tsv = project.write("train.tsv", 'instruction\tinput\toutput\nSay "hi"\t\thi\nAdd\t2 and 2\t4\n')
    assert _pairs(_conversations(tsv, project.config(train="train.tsv"))) == [('Say "hi"', "hi"), ("Add\n\n2 and 2", "4")]
    pq.write_table(pa.Table.from_pylist([{"q": "a?", "a": "b"}, {"q": "c?", "a": None}]), project.root / "train.parquet")
    cfg = project.config(train="train.parquet", prompt_column="q", completion_column="a")
    with pytest.raises(DataError) as exc:
        _conversations(project.root / "train.parquet", cfg)
    assert 'train.parquet row 2: "a" is null' in str(exc.value) and "data.fallback_columns" in str(exc.value)


def test_jsonl_question_answer_with_extra_keys_kept_as_metadata(project):
    rows = [{"id": 7, "question_id": "q7", "question": "2+2?", "answer": "4"}, {"id": 8, "question_id": "q8", "question": "3+3?", "answer": "6"}]
    path = project.write_jsonl("train.jsonl", rows)
    cfg = project.config(train="train.jsonl", prompt_column="question", completion_column="answer")
    with pytest.raises(DataError) as exc:
        _conversations(path, cfg)
    msg = str(exc.value)
    assert 'train.jsonl line 1: prompt_completion row has unrecognised keys "id", "question_id"' in msg
    assert "list it in `data.metadata_columns`" in msg
    assert "set `data.prompt_column`" not in msg  # it is set already
    cfg = project.config(train="train.jsonl", prompt_column="question", completion_column="answer", metadata_columns=["id", "question_id"])
    read = _conversations(path, cfg)
    assert _pairs(read) == [("2+2?", "4"), ("3+3?", "6")]
    assert [r["meta"] for r in read] == [{"id": "7", "question_id": "q7"}, {"id": "8", "question_id": "q8"}]


def test_json_list_with_nulls_uses_a_declared_fallback(project):
    rows = [{"question": "short?", "long_answer": "long", "short_answer": "s"},
            {"question": "none?", "long_answer": "only long", "short_answer": None}]
    path = project.write("train.json", json.dumps(rows, indent=1))
    cfg = project.config(train="train.json", prompt_column="question", completion_column="short_answer",
                         fallback_columns={"short_answer": "long_answer"})
    assert _pairs(_conversations(path, cfg)) == [("short?", "s"), ("none?", "only long")]
    rows[1]["long_answer"] = None
    project.write("train.json", json.dumps(rows, indent=1))
    with pytest.raises(DataError, match=r'train\.json line 7: "short_answer" and its fallback "long_answer" is null'):
        _conversations(path, cfg)


def test_nested_instruction_records_read_by_dotted_columns(project):
    rows = [{"meta": {"source": "web"}, "task": {"instruction": "Name a colour."}, "response": {"text": "Blue."}}]
    path = project.write_jsonl("train.jsonl", rows)
    cfg = project.config(train="train.jsonl", layout="prompt_completion", prompt_column="task.instruction",
                         completion_column="response.text", metadata_columns=["meta.source"])
    read = _conversations(path, cfg)
    assert _pairs(read) == [("Name a colour.", "Blue.")] and read[0]["meta"] == {"meta.source": "web"}


def test_test_rows_written_out_with_their_ids_keep_the_test_fingerprint(project):
    """Issue 17 item 3: retraining writes the frozen splits to new files; with their ids in an id column
    (`data.id_column`) the new version's test rows are the champion's, by fingerprint and by id."""
    import csv

    from tunekit.data import prepare
    from tunekit.data.store import dataset_rows

    project.labelled_csv("tickets.csv", {"a": 10, "b": 10})
    first = prepare(project.config(train="tickets.csv"))
    assert list(first.test["id"])[:2] == ["train-tickets-2", "train-tickets-4"]
    for split in ("train", "validation", "test"):
        with (project.root / f"{split}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "text", "label"])
            writer.writerows([r["id"], r["text"], r["label"]] for r in dataset_rows(getattr(first, split), first.labels))
    again = prepare(project.config(train="train.csv", validation="validation.csv", test="test.csv", id_column="id"))
    assert again.test_fingerprint == first.test_fingerprint and list(again.test["id"]) == list(first.test["id"])
    without_ids = prepare(project.config(train="train.csv", validation="validation.csv", test="test.csv"))
    assert without_ids.test_fingerprint != first.test_fingerprint  # renumbered ids: compare would refuse


def test_config_texts_read_with_the_configs_options(project):
    """Issue 18 item 9: what `tunekit models tiny` trains its tokenizer on, read as the config reads the data."""
    from tunekit.config import TunekitConfig, load_config
    from tunekit.data.conversations import config_texts

    project.write("train.tsv", "q\ta\nwhat is 2+2?\t4\n")
    project.config(train="train.tsv", prompt_column="q", completion_column="a")
    raw = (project.root / "config.yaml").read_text().replace("name: t", "name: t\ntask: generation")
    (project.root / "config.yaml").write_text(raw)
    cfg = load_config(project.root / "config.yaml")
    assert isinstance(cfg, TunekitConfig) and config_texts(cfg) == ["user: what is 2+2?\nassistant: 4"]


def test_per_file_options_are_part_of_the_frozen_splits_key(project):
    from tunekit.data import prepare

    project.labelled_csv("train.csv", {"a": 10, "b": 10})
    project.write("test.csv", "text;label\nhello;a\nbye;b\n")
    first = prepare(project.config(train="train.csv", test={"path": "test.csv", "delimiter": ";"}))
    assert not first.reused and list(first.test["text"]) == ["hello", "bye"]
    assert prepare(project.config(train="train.csv", test={"path": "test.csv", "delimiter": ";"})).reused
    project.write("test.csv", "text|label\nhello|a\nbye|b\n")
    other = prepare(project.config(train="train.csv", test={"path": "test.csv", "delimiter": "|"}))
    assert not other.reused and other.test_fingerprint == first.test_fingerprint  # same rows, other bytes and options
