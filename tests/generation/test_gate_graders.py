"""gate.graders: OpenAI grader definitions as a promotion condition, and `tunekit eval RUN --graders FILE`
grading a finished run's test answers with the same definitions."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tests.generation.conftest import reverse_rows, write_jsonl
from tunekit.cli import app
from tunekit.config import load_config
from tunekit.errors import ConfigError, TunekitError

runner = CliRunner()

IMPOSSIBLE = {"type": "string_check", "name": "impossible", "input": "{{sample.output_text}}", "reference": "no model says this",
              "operation": "eq"}
NOT_MARKER = {"type": "string_check", "name": "not_marker", "input": "{{sample.output_text}}", "reference": "@@@", "operation": "ne"}
CLOSE = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}", "reference": "{{item.reference}}",
         "evaluation_metric": "rouge_l", "pass_threshold": 0.5}
ASKED = {"type": "string_check", "name": "asked", "input": "{{item.messages.0.content}}", "reference": "{{item.prompt}}", "operation": "like"}


def raw_config(root, tiny_llama, **gate) -> dict:
    return {"name": "reverse", "task": "generation", "workspace": str(root / "ws"),
            "data": {"train": "train.jsonl", "split": {"validation": 0.1, "test": 0.15, "seed": 3}},
            "model": {"base": str(tiny_llama), "max_length": 48}, "method": {"kind": "full"},
            "train": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "weight_decay": 0.0, "early_stopping_patience": 0,
                      "checkpoint_every": 0},
            "eval": {"max_new_tokens": 12, "k_shot": 2, "bootstrap_resamples": 100},
            "gate": {"min_improvement": -1.0, **gate}}


def write_config(root, raw) -> object:
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    return root / "config.yaml"


# ---------------------------------------------------------------------------------------- config

@pytest.mark.parametrize(("grader", "words"), [
    ({**IMPOSSIBLE, "operation": "equals"}, ["gate.graders[1].grader.operation", "'equals' is not one of eq, ne, like, ilike"]),
    ({"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "x", "evaluation_metric": "meteor", "pass_threshold": 0.5},
     ["gate.graders[1].grader.evaluation_metric", "WordNet"]),
    ({**NOT_MARKER, "input": "{{answer}}"}, ["gate.graders[1].grader.input", "must name a field of `item` or `sample`"]),
    ({"type": "score_model", "input": [{"role": "user", "content": "rate {{sample.output_text}}"}], "model": "judge"},
     ["gate.graders[1].grader.type", "needs another served model"]),
    ({"type": "python", "source": "def grade(sample, item):\n    return 1.0\n"}, ["gate.graders[1].grader.type", "runs submitted code"]),
    (NOT_MARKER, ["gate.graders[1].grader.name", "also the name of an earlier grader"]),
])
def test_a_bad_gate_grader_is_a_config_error_naming_the_field(tmp_path, grader, words):
    path = write_config(tmp_path, raw_config(tmp_path, "/nonexistent", graders=[{"grader": NOT_MARKER, "min_pass_rate": 0.5},
                                                                                {"grader": grader, "min_pass_rate": 0.5}]))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for word in words:
        assert word in str(err.value)


def test_gate_graders_need_a_pass_rate_in_range_and_a_text_task(tmp_path):
    raw = raw_config(tmp_path, "/nonexistent", graders=[{"grader": NOT_MARKER, "min_pass_rate": 1.5}])
    with pytest.raises(ConfigError, match=r"gate.graders.0.min_pass_rate"):
        load_config(write_config(tmp_path, raw))
    raw = {**raw_config(tmp_path, "/nonexistent", graders=[{"grader": NOT_MARKER, "min_pass_rate": 0.5}]), "task": "classification"}
    raw["data"] = {"train": "train.csv"}
    raw.pop("eval")
    with pytest.raises(ConfigError, match="`gate.graders` grade generated text, for task generation or preference; this task is classification"):
        load_config(write_config(tmp_path, raw))
    ok = load_config(write_config(tmp_path, raw_config(tmp_path, "/nonexistent", graders=[{"grader": CLOSE, "min_pass_rate": 0.25}])))
    assert ok.gate.graders[0].grader["evaluation_metric"] == "rouge_l" and ok.gate.graders[0].min_pass_rate == 0.25


# ---------------------------------------------------------------------------------------- a run gated by graders

@pytest.fixture(scope="module")
def graded_run(tiny_llama, tmp_path_factory):
    """The pipeline once (2 epochs of the tiny Llama) with one grader that every answer passes and one none can."""
    from rich.console import Console

    from tunekit import pipeline

    root = tmp_path_factory.mktemp("graded")
    write_jsonl(root / "train.jsonl", reverse_rows(360))
    raw = raw_config(root, tiny_llama, beat_champion=False, graders=[
        {"grader": NOT_MARKER, "min_pass_rate": 0.9}, {"grader": ASKED, "min_pass_rate": 1.0},
        {"grader": IMPOSSIBLE, "min_pass_rate": 0.5}])
    console = Console(width=200, record=True)
    outcome = pipeline.run(load_config(write_config(root, raw)), console)
    return outcome, console.export_text(), root


@pytest.mark.slow
def test_a_grader_below_its_min_pass_rate_fails_the_gate(graded_run):
    outcome, printed, _ = graded_run
    assert not outcome.decision.passed and outcome.decision.alias == "challenger"
    reasons = outcome.decision.reasons
    n = len(list((outcome.run_dir / "predictions.jsonl").read_text().splitlines()))
    assert f"grader impossible: pass rate 0.000 (0 of {n} test answers) is below the required 0.500" in " ".join(reasons)
    assert any(r.startswith(f"grader not_marker: pass rate 1.000 ({n} of {n} test answers) reaches the required 0.900 (baseline: base model zero-shot 1.000")
               for r in reasons)
    # the gate's items carry the conversation (messages) as well as the prompt
    assert any(r.startswith("grader asked: pass rate 1.000") for r in reasons)
    card = json.loads((outcome.run_dir / "report.json").read_text())
    graders = {g["name"]: g for g in card["analysis"]["gate_graders"]}
    assert set(graders["impossible"]["models"]) >= {"fine_tuned", "base model zero-shot", "base model 2-shot"}
    assert graders["impossible"]["min_pass_rate"] == 0.5 and len(graders["impossible"]["failures"]) == 5
    assert "grader impossible" in card["registry"]["reason"]
    assert "grader impossible (string_check): pass rate fine_tuned 0.000, base model zero-shot 0.000" in printed


@pytest.mark.slow
def test_tunekit_eval_grades_a_finished_run(graded_run, tmp_path):
    outcome, _, root = graded_run
    ws = str(root / "ws")
    file = tmp_path / "graders.yaml"
    file.write_text(yaml.safe_dump({"graders": [{**CLOSE, "min_pass_rate": 0.0}, {"grader": IMPOSSIBLE, "min_pass_rate": 0.5}]}))
    result = runner.invoke(app, ["eval", outcome.run_id, "--graders", str(file), "--workspace", ws, "--json"])
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["passed"] is False and [g["name"] for g in out["graders"]] == ["close", "impossible"]
    assert out["graders"][1]["models"]["fine_tuned"]["rate"] == 0.0 and out["graders"][1]["passed"] is False
    assert out["graders"][0]["passed"] is True and set(out["graders"][0]["models"]) >= {"fine_tuned", "base model zero-shot", "base model 2-shot"}
    # the same run's rates as the gate's (the gate adds messages and metadata, which these graders do not use)
    card = json.loads((outcome.run_dir / "report.json").read_text())
    gate = {g["name"]: g for g in card["analysis"]["gate_graders"]}
    assert out["graders"][1]["models"] == gate["impossible"]["models"]

    file.write_text(json.dumps([NOT_MARKER, CLOSE]))  # no min_pass_rate: reported, exit 0; a run folder works as RUN
    result = runner.invoke(app, ["eval", str(outcome.run_dir), "--graders", str(file)])
    assert result.exit_code == 0, result.output
    assert "not_marker (string_check)" in result.stdout and "1.000" in result.stdout and "fine_tuned" in result.stdout

    file.write_text(yaml.safe_dump([NOT_MARKER, {**CLOSE, "evaluation_metric": "cosine"}]))
    result = runner.invoke(app, ["eval", outcome.run_id, "--graders", str(file), "--workspace", ws])
    assert isinstance(result.exception, TunekitError)
    assert str(result.exception).startswith(f"{file}: graders[1].evaluation_metric: 'cosine' is not supported")
    result = runner.invoke(app, ["eval", "no-such-run", "--graders", str(file), "--workspace", ws])
    assert isinstance(result.exception, TunekitError) and "run 'no-such-run': no report.json" in str(result.exception)
