"""eval.extract (issue 18 item 6): generation is scored on the answer inside the text, not the whole text."""

from __future__ import annotations

import pytest

from tunekit.errors import ConfigError, DataError
from tunekit.data.answers import extract_answer
from tunekit.evaluate.textgen import generation_metrics

GSM = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72"


@pytest.mark.parametrize(("text", "rule", "answer"), [
    (GSM, "#### *(.+)", "72"),
    (GSM, "last_number", "72"),
    ("It costs $1,234.50 in total.", "last_number", "1234.5"),
    ("The answer is 42.0", "last_number", "42"),
    ("no digits here", "last_number", None),
    ("Answer: B) blue", r"Answer: ([A-D])", "B"),
    ("no pattern", "#### *(.+)", None),
    ("whole text kept", None, "whole text kept"),
])
def test_extract_answer(text, rule, answer):
    assert extract_answer(text, rule) == answer


def test_metrics_score_the_extracted_answer():
    refs = [GSM, "3 + 4 = 7\n#### 7", "2 * 5 = 10\n#### 10"]
    preds = ["48/2 = 24, so 24 + 48 = 72\n#### 72", "I think it is 8\n#### 8", "The result: 10"]
    whole = generation_metrics(preds, refs)
    assert whole["exact_match"] == 0.0
    assert generation_metrics(preds, refs, extract="#### *(.+)")["exact_match"] == pytest.approx(1 / 3)  # the last has no ####
    assert generation_metrics(preds, refs, extract="last_number")["exact_match"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(("task", "rule", "message"), [
    ("generation", "(unclosed", "`eval.extract` is not a valid regular expression"),
    ("generation", "(a)(b)", "`eval.extract` has 2 groups"),
    ("classification", "last_number", "`eval.extract` picks the answer out of generated text, for task generation"),
])
def test_config_checks_the_rule(tmp_path, task, rule, message):
    import yaml

    from tunekit.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "task": task, "data": {"train": "a.jsonl"}, "eval": {"extract": rule}}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path)


def test_test_reference_without_an_answer_is_a_data_error_naming_its_line(project):
    from tunekit.config import TunekitConfig
    from tunekit.data.conversations import check_answers

    cfg = TunekitConfig.model_validate({"name": "t", "task": "generation", "data": {"train": "a.jsonl"}, "eval": {"extract": "#### *(.+)"}})
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": GSM}], "origin": "test.jsonl line 1"}
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "just 72"}], "origin": "test.jsonl line 2"}
    check_answers(cfg, [good])
    with pytest.raises(DataError, match=r"test\.jsonl line 2: the reference answer 'just 72' has no answer for eval\.extract '#### \*\(\.\+\)'"):
        check_answers(cfg, [good, bad])
