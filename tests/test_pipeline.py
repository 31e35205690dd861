"""`pipeline.run` on the tiny task: every stage, the report card, the gate and the champion check."""

import json

import pytest
from rich.console import Console

from tunekit import pipeline
from tunekit.config import load_config


@pytest.fixture
def quiet():
    return Console(quiet=True)


def test_run_writes_card_with_statistics_and_registers(tiny_config, quiet):
    outcome = pipeline.run(load_config(tiny_config()), quiet)
    card = outcome.card
    assert outcome.version == "1"
    analysis = card["analysis"]
    acc = analysis["versus_baseline"]["accuracy"]
    assert acc["low"] <= acc["diff"] <= acc["high"]
    assert acc["b"] == pytest.approx(card["model"]["metrics"]["accuracy"])
    assert sum(analysis["diff"]["counts"].values()) == card["data"]["rows"]["test"]
    assert 0 <= analysis["calibration"]["ece_after"] <= 1
    assert set(analysis["robustness"]) == {"typo", "lowercase", "uppercase", "punctuation", "whitespace"}
    assert analysis["explanations"] and all(e["attributions"] for e in analysis["explanations"])
    manifest = json.loads((outcome.run_dir / "adapter" / "tunekit.json").read_text())
    assert manifest["temperature"] == pytest.approx(analysis["calibration"]["temperature"])
    assert manifest["metrics"]["accuracy"] == pytest.approx(card["model"]["metrics"]["accuracy"])
    page = (outcome.run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "Is the difference real?" in page
    assert "label_noise" in card


def test_second_run_is_compared_with_the_champion_on_the_same_rows(tiny_config, quiet):
    cfg = load_config(tiny_config())
    first = pipeline.run(cfg, quiet)
    second = pipeline.run(cfg, quiet)
    assert second.version == "2"
    assert second.card["data"]["reused"]
    if first.decision.passed:
        champ = second.decision.champion
        assert champ.version == "1" and champ.how == "recorded"
        assert champ.score == pytest.approx(first.card["model"]["metrics"]["macro_f1"])
        # seeded training on identical data reproduces the champion exactly, which is "not below" it
        assert second.decision.passed


def test_failing_behavioural_suite_blocks_promotion(tiny_config, quiet, tmp_path):
    (tmp_path / "suite.yaml").write_text(
        "cases:\n"
        "  - {name: refunds, must_predict: refund, texts: ['please refund the purchase']}\n"
        "  - {name: impossible, must_predict: card, texts: ['please refund the purchase']}\n"
    )
    cfg = load_config(tiny_config(eval={"suite": "suite.yaml"}, gate={"require_suite": True}))
    outcome = pipeline.run(cfg, quiet)
    suite = outcome.card["analysis"]["suite"]
    assert suite["failed"] >= 1
    assert not outcome.decision.passed and outcome.decision.alias == "challenger"
    assert "behavioural test cases fail" in outcome.decision.summary()


def test_report_command_rebuilds_and_compares_runs(tiny_config, quiet, tmp_path):
    from typer.testing import CliRunner

    from tunekit.cli import app

    cfg = load_config(tiny_config(train={"epochs": 4}))
    first, second = pipeline.run(cfg, quiet), pipeline.run(cfg, quiet)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(second.run_dir), "--compare", str(first.run_dir)])
    assert result.exit_code == 0, result.output
    comparison = json.loads((second.run_dir / f"compare-{first.run_dir.name}.json").read_text())
    assert comparison["rows"] == first.card["data"]["rows"]["test"]
    acc = comparison["metrics"]["accuracy"]
    assert acc["a"] == pytest.approx(first.card["model"]["metrics"]["accuracy"])
    assert (second.run_dir / f"compare-{first.run_dir.name}.html").read_text().startswith("<!doctype html>")
    (first.run_dir / "report.html").unlink()
    assert runner.invoke(app, ["report", str(first.run_dir)]).exit_code == 0
    assert (first.run_dir / "report.html").exists()
