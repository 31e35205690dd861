"""The data report counts planted duplicates, leakage and over-long rows exactly."""

from __future__ import annotations

import json

import pytest

from tunekit.data import prepare, render_report_markdown, summary
from tunekit.data.report import normalise

TRAIN = (
    "text,label\n"
    "hello world,a\n"
    "hello world,a\n"          # exact duplicate of line 2
    '"Hello,  World!",b\n'     # normalised duplicate of line 2, with another label
    "unique one,a\n"
    "another thing,b\n"
    "something else,b\n"
)
VALIDATION = "text,label\nanother thing,b\nbrand new,a\n"
TEST = "text,label\nhello world,a\nUNIQUE ONE!,a\nfresh text,b\n"


@pytest.fixture
def planted(project):
    project.write("train.csv", TRAIN)
    project.write("valid.csv", VALIDATION)
    project.write("test.csv", TEST)
    return prepare(project.config(train="train.csv", validation="valid.csv", test="test.csv"))


def test_normalise_lowercases_strips_punctuation_and_collapses_space():
    assert normalise("  Hello,\tWORLD!! ") == "hello world"
    assert normalise("don't_stop") == "dontstop"


def test_rows_and_label_distribution(planted):
    report = planted.report
    assert report["rows"] == {"train": 6, "validation": 2, "test": 3}
    assert report["labels"]["per_split"] == {"train": {"a": 3, "b": 3}, "validation": {"a": 1, "b": 1}, "test": {"a": 2, "b": 1}}
    assert report["labels"]["imbalance_ratio"] == 1.0


def test_duplicates_within_train(planted):
    dup = planted.report["duplicates"]
    assert {k: dup["exact"][k] for k in ("rows", "groups", "conflicting_labels")} == {"rows": 1, "groups": 1, "conflicting_labels": 0}
    assert {k: dup["normalised"][k] for k in ("rows", "groups", "conflicting_labels")} == {"rows": 2, "groups": 1, "conflicting_labels": 1}
    assert dup["exact"]["examples"] == [{"text": "hello world", "count": 2, "ids": ["train-2", "train-3"], "labels": ["a"]}]
    assert dup["normalised"]["examples"][0]["labels"] == ["a", "b"]


def test_leakage_into_train(planted):
    leak = planted.report["leakage"]
    assert (leak["test"]["exact"], leak["test"]["normalised"]) == (1, 2)
    assert [e["id"] for e in leak["test"]["examples"]] == ["test-2", "test-3"]
    assert (leak["validation"]["exact"], leak["validation"]["normalised"]) == (1, 1)
    assert leak["test"]["fraction_exact"] == round(1 / 3, 4)


def test_warnings_and_files(planted):
    warnings = planted.report["warnings"]
    assert "1 training rows repeat an earlier training row exactly" in warnings
    assert "1 training texts appear with different labels" in warnings
    assert any(w.startswith("2 test rows also appear in train (1 exactly") for w in warnings)
    assert json.loads((planted.directory / "report.json").read_text()) == planted.report
    assert (planted.directory / "report.md").read_text() == render_report_markdown(planted.report)


def test_character_lengths_without_a_tokenizer(planted):
    lengths = planted.report["lengths"]
    assert lengths["unit"] == "characters" and "token lengths skipped" in lengths["note"]
    assert lengths["splits"]["validation"] == {"min": 9, "mean": 11.0, "p50": 11.0, "p95": 12.8, "max": 13}


def test_token_lengths_and_overlength_count_with_the_real_tokenizer(project, minilm_tokenizer):
    long = " ".join(["word"] * 20)  # 20 word pieces + [CLS] + [SEP] = 22 tokens
    lines = ["text,label"] + [f"short {i},a" for i in range(6)] + [f"{long} {i},b" for i in range(4)]
    project.write("train.csv", "\n".join(lines) + "\n")
    project.write("valid.csv", f"text,label\nhi there,a\n{long},b\n")
    project.write("test.csv", "text,label\nhi,a\n")
    cfg = project.config(train="train.csv", validation="valid.csv", test="test.csv", model={"max_length": 16})
    data = prepare(cfg, tokenizer=minilm_tokenizer)
    lengths = data.report["lengths"]
    assert lengths["unit"] == "tokens" and lengths["max_length"] == 16
    assert lengths["splits"]["train"]["over_max_length"] == 4
    assert lengths["splits"]["validation"] == {"min": 4, "mean": 13.0, "p50": 13.0, "p95": 21.1, "max": 22, "over_max_length": 1}
    assert lengths["splits"]["test"]["max"] == 3
    assert "4 train rows are longer than model.max_length = 16 tokens and will be truncated" in data.report["warnings"]


def test_token_lengths_count_the_text_pair(project, minilm_tokenizer):
    lines = ["premise,hypothesis,label"] + [f"it rains {i},it is wet,{'yes' if i % 2 else 'no'}" for i in range(20)]
    project.write("pairs.csv", "\n".join(lines) + "\n")
    data = prepare(project.config(train="pairs.csv", text_column="premise", text_pair_column="hypothesis"),
                   tokenizer=minilm_tokenizer)
    # [CLS] it rains N [SEP] it is wet [SEP]
    assert data.report["lengths"]["splits"]["test"]["max"] == 9


def test_markdown_has_headings_tables_and_escaped_cells(project):
    project.write("train.csv", 'text,label\n"a | pipe",x\n"a | pipe",x\nother,y\nmore,y\n')
    project.write("valid.csv", "text,label\nv,x\n")
    project.write("test.csv", "text,label\nt,y\n")
    data = prepare(project.config(train="train.csv", validation="valid.csv", test="test.csv"))
    md = render_report_markdown(data.report)
    for heading in ("# Data report: t", "## Warnings", "## Rows", "## Labels (2)", "## Duplicates within train",
                    "## Leakage into train", "## Lengths (characters)"):
        assert heading in md
    assert "| x | 2 | 1 | 0 |" in md
    assert "a \\| pipe" in md
    assert "1 label(s) have no test rows (x)" in md


def test_summary_for_the_terminal(planted):
    text = summary(planted)
    assert text.startswith("Data t: 6 train / 2 validation / 3 test rows, 2 labels")
    assert f"Fingerprint {planted.fingerprint[:16]} (froze new splits in {planted.directory})" in text
    assert "Warning: 1 training rows repeat an earlier training row exactly" in text


def test_exact_train_test_duplicates_can_be_dropped_or_refused(project):
    from tunekit.errors import DataError

    project.write("train.csv", TRAIN)
    project.write("valid.csv", VALIDATION)
    project.write("test.csv", TEST)
    files = {"train": "train.csv", "validation": "valid.csv", "test": "test.csv"}
    with pytest.raises(DataError) as exc:
        prepare(project.config(**files, duplicates="error"))
    msg = str(exc.value)
    assert "3 problems" in msg and "train.csv line 2: this training row's text also sits in the test split exactly (row test-2, line 2)" in msg
    assert "train.csv line 6: this training row's text also sits in the validation split exactly" in msg
    assert not list((project.root / "ws" / "datasets").glob("*/meta.json"))  # refused before anything was frozen
    dropped = prepare(project.config(**files, duplicates="drop"))
    assert dropped.report["rows"] == {"train": 3, "validation": 2, "test": 3}
    assert dropped.report["leakage"]["test"]["exact"] == 0 and dropped.report["leakage"]["validation"]["exact"] == 0
    assert dropped.report["leaked_rows_removed"] == 3
    assert ("3 training rows were left out because their text sits exactly in the validation or test split (data.duplicates: drop)"
            in dropped.report["warnings"])
    kept = prepare(project.config(**files))  # the default keeps them, with the leakage warning
    assert kept.report["rows"]["train"] == 6 and kept.report["leakage"]["test"]["exact"] == 1


def test_pii_scan_counts_kinds_per_split_and_names_rows(project):
    project.write("train.csv", "text,label\n"
                               "mail me at jane.doe@example.com,a\n"
                               "call +44 20 7946 0958 or +1 (555) 123-4567,b\n"
                               "nothing personal here,a\n"
                               "card 4111 1111 1111 1111 please,b\n")
    project.write("test.csv", "text,label\nwrite to joe@example.org,a\nplain text,b\n")
    project.write("valid.csv", "text,label\nok,a\nfine,b\n")
    prepared = prepare(project.config(train="train.csv", validation="valid.csv", test="test.csv"))
    pii = prepared.report["pii"]
    assert {name: (split["rows"], split["counts"]) for name, split in pii.items()} == {
        "train": (3, {"card": 1, "email": 1, "phone": 2}), "validation": (0, {}), "test": (1, {"email": 1})}
    assert [e["at"] for e in pii["train"]["examples"]] == ["train-2", "train-3", "train-5"]
    assert pii["test"]["examples"] == [{"at": "test-2", "kinds": ["email"]}]
    assert "1 test rows hold personal data: e-mail addresses (1); e.g. test-2" in prepared.report["warnings"]
    assert "## Personal data (PII)" in render_report_markdown(prepared.report)


def test_sentence_pair_duplicates_and_leakage_show_both_texts(project):
    project.write("train.csv", "premise,hypothesis,label\nit rains,it is wet,yes\nit rains,it is wet,yes\nit rains,it is dry,no\n"
                               "a cat sleeps,an animal rests,yes\nthe sun is out,it is night,no\n")
    project.write("valid.csv", "premise,hypothesis,label\nx,y,yes\nz,w,no\n")
    project.write("test.csv", "premise,hypothesis,label\nit rains,it is dry,no\nit rains,it snows,no\n")
    prepared = prepare(project.config(train="train.csv", validation="valid.csv", test="test.csv", text_column="premise",
                                      text_pair_column="hypothesis"))
    report = prepared.report
    assert report["duplicates"]["exact"]["examples"] == [
        {"text": "it rains", "text_pair": "it is wet", "count": 2, "ids": ["train-2", "train-3"], "labels": ["yes"]}]
    assert report["leakage"]["test"]["examples"] == [{"id": "test-2", "text": "it rains", "text_pair": "it is dry", "label": "no"}]
    markdown = render_report_markdown(report)
    assert "| id | label | text | text pair |" in markdown and "| test-2 | no | it rains | it is dry |" in markdown
    assert "| it rains | it is wet | 2 | yes | train-2, train-3 |" in markdown
