"""Graders: each kind's numbers checked by hand or against the metric libraries directly."""

from __future__ import annotations

import time

import pytest
from rapidfuzz import fuzz
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from tunekit.evaluate.graders import (
    GraderDefinitionError,
    grade,
    render,
    validate,
    validate_all,
)

ITEM = {"question": "capital of France?", "answer": "Paris", "meta": {"tags": ["geo", "eu"]}}
SAMPLE = {"output_text": "The capital is Paris."}


def check(op, input, reference):
    return grade({"type": "string_check", "name": "s", "input": input, "reference": reference, "operation": op}, ITEM, SAMPLE)


def test_string_check_operations():
    assert check("eq", "{{item.answer}}", "Paris").passed
    assert not check("eq", "{{item.answer}}", "paris").passed
    assert check("ne", "{{item.answer}}", "paris").score == 1.0
    assert check("like", "{{sample.output_text}}", "{{item.answer}}").passed
    assert not check("like", "{{sample.output_text}}", "paris").passed
    assert check("ilike", "{{sample.output_text}}", "PARIS").passed
    result = check("eq", "{{item.answer}}", "London")
    assert (result.score, result.passed, result.error) == (0.0, False, None)


def test_templates_nested_fields_and_missing_field_is_an_item_error():
    assert render("{{ item.meta.tags.1 }}/{{item.meta.tags}}", ITEM, None) == 'eu/["geo", "eu"]'
    result = check("eq", "{{item.nope}}", "x")
    assert not result.passed and "item has no field 'nope'" in result.error
    result = grade({"type": "string_check", "input": "{{sample.output_text}}", "reference": "x", "operation": "eq"}, ITEM, None)
    assert "there is no `sample`" in result.error


def similarity(metric, text, ref, threshold=0.5):
    return grade({"type": "text_similarity", "name": "t", "input": text, "reference": ref, "evaluation_metric": metric,
                  "pass_threshold": threshold}, ITEM, SAMPLE)


def test_text_similarity_matches_the_libraries():
    text, ref = "the cat sat on the mat", "the cat is on the mat"
    assert similarity("bleu", text, ref).score == pytest.approx(BLEU(effective_order=True).sentence_score(text, [ref]).score / 100)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    expected = scorer.score(ref, text)
    assert similarity("rouge_1", text, ref).score == pytest.approx(expected["rouge1"].fmeasure)
    assert similarity("rouge_2", text, ref).score == pytest.approx(expected["rouge2"].fmeasure)
    assert similarity("rouge_l", text, ref).score == pytest.approx(expected["rougeL"].fmeasure)
    # by hand: 5 of 6 unigrams shared -> P = R = 5/6; bigrams: the cat, on the, the mat of 5 -> 3/5
    assert similarity("rouge_1", text, ref).score == pytest.approx(5 / 6)
    assert similarity("rouge_2", text, ref).score == pytest.approx(3 / 5)
    assert similarity("fuzzy_match", "kitten", "sitting").score == pytest.approx(fuzz.ratio("kitten", "sitting") / 100)
    assert similarity("fuzzy_match", "kitten", "sitting").score == pytest.approx(1 - 5 / 13)  # Indel distance 5 over 13 chars
    assert similarity("gleu", "a b c d", "a b c d").score == 1.0
    assert similarity("bleu", "Paris", "Paris").passed
    assert not similarity("fuzzy_match", "abc", "xyz", threshold=0.5).passed


def test_text_similarity_unsupported_metric_names_the_supported_ones():
    with pytest.raises(GraderDefinitionError) as err:
        validate({"type": "text_similarity", "input": "a", "reference": "b", "evaluation_metric": "meteor", "pass_threshold": 1},
                 "testing_criteria[0]")
    assert err.value.http_status == 400 and err.value.param == "testing_criteria[0].evaluation_metric"
    assert "WordNet" in str(err.value) and "fuzzy_match, bleu, gleu, rouge_1" in str(err.value)


def test_definitions_are_validated_naming_the_field():
    ok = {"type": "string_check", "name": "a", "input": "x", "reference": "y", "operation": "eq"}
    with pytest.raises(GraderDefinitionError) as err:
        validate_all([ok, {**ok, "operation": "equals"}])
    assert str(err.value) == "testing_criteria[1].operation: 'equals' is not one of eq, ne, like, ilike"
    with pytest.raises(GraderDefinitionError, match=r"testing_criteria\[0\].type: 'multi' is not one of"):
        validate_all([{"type": "multi"}])
    with pytest.raises(GraderDefinitionError, match=r"grader.reference: required"):
        validate({"type": "string_check", "input": "x", "operation": "eq"})
    with pytest.raises(GraderDefinitionError, match=r"template \{\{foo.bar\}\} must name a field of `item` or `sample`"):
        validate({**ok, "input": "{{foo.bar}}"})
    with pytest.raises(GraderDefinitionError, match=r"grader.passing_labels: 'maybe' is not one of labels"):
        validate({"type": "label_model", "model": "m", "input": [{"role": "user", "content": "hi"}], "labels": ["yes", "no"],
                  "passing_labels": ["maybe"]})
    with pytest.raises(GraderDefinitionError, match=r"grader.source: not valid Python"):
        validate({"type": "python", "source": "def grade(:"})


def judge_returning(answer):
    calls = []

    def complete(model, messages, params):
        calls.append((model, messages, params))
        return answer

    return complete, calls


LABEL = {"type": "label_model", "name": "judge", "model": "judge-model", "labels": ["correct", "incorrect"],
         "passing_labels": ["correct"],
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "Q: {{item.question}} A: {{sample.output_text}}"}]}]}


def test_label_model_with_a_fake_judge():
    complete, calls = judge_returning("Correct.")
    result = grade(LABEL, ITEM, SAMPLE, complete)
    assert (result.passed, result.score, result.error) == (True, 1.0, None)
    model, messages, _ = calls[0]
    assert model == "judge-model" and messages[0] == {"role": "user", "content": "Q: capital of France? A: The capital is Paris."}
    assert "correct, incorrect" in messages[-1]["content"]
    assert result.sample["label"] == "correct" and result.usage[0].model == "judge-model"
    assert not grade(LABEL, ITEM, SAMPLE, judge_returning('{"label": "incorrect"}')[0]).passed
    unusable = grade(LABEL, ITEM, SAMPLE, judge_returning("no idea")[0])
    assert unusable.error and "not one of the labels correct, incorrect" in unusable.error
    assert "needs a served model" in grade(LABEL, ITEM, SAMPLE, None).error


SCORE = {"type": "score_model", "name": "score", "model": "judge-model", "range": [1, 5], "pass_threshold": 4,
         "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}], "sampling_params": {"max_completions_tokens": 5}}


def test_score_model_with_a_fake_judge():
    complete, calls = judge_returning("Score: 4.5 out of 5")
    result = grade(SCORE, ITEM, SAMPLE, complete)
    assert (result.score, result.passed) == (4.5, True)
    assert calls[0][2] == {"max_completion_tokens": 5}
    assert grade(SCORE, ITEM, SAMPLE, judge_returning('{"result": 3}')[0]).score == 3.0
    assert not grade(SCORE, ITEM, SAMPLE, judge_returning("3")[0]).passed
    assert "outside the range [1, 5]" in grade(SCORE, ITEM, SAMPLE, judge_returning("9")[0]).error
    default = {**SCORE, "range": None, "pass_threshold": None}
    assert grade(default, ITEM, SAMPLE, judge_returning("0.5")[0]).passed  # the middle of [0, 1]
    assert not grade(default, ITEM, SAMPLE, judge_returning("0.4")[0]).passed


def python_grader(body, **extra):
    return {"type": "python", "name": "py", "source": "def grade(sample, item):\n" + body, **extra}


def test_python_grader_runs_in_a_separate_process():
    source = ("    import os\n    print('noise')\n"
              "    return (1.0 if sample['output_text'].endswith(item['answer'] + '.') else 0.0) + os.getpid() * 0\n")
    result = grade(python_grader(source), ITEM, SAMPLE, allow_python=True)
    assert (result.score, result.passed, result.error) == (1.0, True, None)
    assert not grade(python_grader("    return 0.25\n"), ITEM, SAMPLE, allow_python=True).passed
    assert grade(python_grader("    return 0.25\n", pass_threshold=0.2), ITEM, SAMPLE, allow_python=True).passed


def test_python_grader_that_loops_forever_times_out():
    started = time.monotonic()
    result = grade(python_grader("    while True:\n        pass\n"), ITEM, SAMPLE, allow_python=True, python_timeout_s=1)
    assert time.monotonic() - started < 5
    assert not result.passed and "did not finish within 1 s" in result.error


def test_python_grader_that_allocates_too_much_memory_is_an_error():
    result = grade(python_grader("    x = bytearray(2 * 1024 ** 3)\n    return 1.0\n"), ITEM, SAMPLE, allow_python=True,
                   python_memory_bytes=256 * 2 ** 20)
    assert not result.passed and "MemoryError" in result.error


def test_python_grader_errors_and_bad_scores_are_item_errors():
    assert "ZeroDivisionError" in grade(python_grader("    return 1 / 0\n"), ITEM, SAMPLE, allow_python=True).error
    assert "finite number" in grade(python_grader("    return 'high'\n"), ITEM, SAMPLE, allow_python=True).error


def test_python_grader_disabled_is_a_clear_error():
    result = grade(python_grader("    return 1.0\n"), ITEM, SAMPLE)
    assert not result.passed and "python graders are turned off" in result.error
