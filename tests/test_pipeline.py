"""`pipeline.run` on the tiny task: every stage, the report card, the gate and the champion check."""

import json

import numpy as np
import pytest
from rich.console import Console

from tests.conftest import tiny_config_in
from tunekit import pipeline
from tunekit.config import load_config


@pytest.fixture
def quiet():
    return Console(quiet=True)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_bert):
    """``(cfg, first, second)``: one config run twice, read (not changed) by several tests. The tiny
    task is easy for TF-IDF too; a negative margin lets the first version in, so the second one meets a champion."""
    cfg = load_config(tiny_config_in(tmp_path_factory.mktemp("two-runs"), tiny_bert)(gate={"min_improvement": -1.0}))
    quiet = Console(quiet=True)
    first = pipeline.run(cfg, quiet)
    return cfg, first, pipeline.run(cfg, quiet)


def test_run_writes_card_with_statistics_and_registers(two_runs):
    cfg, outcome, _ = two_runs
    card = outcome.card
    assert outcome.version == "1"
    analysis = card["analysis"]
    acc = analysis["versus_baseline"]["accuracy"]
    assert acc["low"] <= acc["diff"] <= acc["high"]
    assert acc["b"] == pytest.approx(card["model"]["metrics"]["accuracy"])
    assert sum(analysis["diff"]["counts"].values()) == card["data"]["rows"]["test"]
    # the card's calibration error is that of the saved model's own test probabilities (temperature 1)
    from tunekit import data as data_stage
    from tunekit.evaluate import calibration
    from tunekit.models import load_trained

    test = data_stage.prepare(cfg).test
    model = load_trained(outcome.run_dir / "adapter")
    model.info.temperature = 1.0
    bins = calibration.reliability_bins(model.predict_proba(list(test["text"])), np.asarray(list(test["label"])))
    assert analysis["calibration"]["ece_before"] == pytest.approx(calibration.ece_from_bins(bins), abs=1e-6)
    assert set(analysis["robustness"]) == {"typo", "lowercase", "uppercase", "punctuation", "whitespace"}
    assert analysis["explanations"] and all(e["attributions"] for e in analysis["explanations"])
    manifest = json.loads((outcome.run_dir / "adapter" / "tunekit.json").read_text())
    assert manifest["temperature"] == pytest.approx(analysis["calibration"]["temperature"])
    assert manifest["metrics"]["accuracy"] == pytest.approx(card["model"]["metrics"]["accuracy"])
    page = (outcome.run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "Is the difference real?" in page
    assert card["task"] == "classification" and card["data"]["n_labels"] == 3


def test_second_run_is_compared_with_the_champion_on_the_same_rows(two_runs):
    _, first, second = two_runs
    assert second.version == "2"
    assert second.card["data"]["reused"]
    assert first.decision.passed
    champ = second.decision.champion
    assert champ.version == "1" and champ.how == "recorded"
    assert champ.score == pytest.approx(first.card["model"]["metrics"]["macro_f1"])
    # seeded training on identical data reproduces the champion exactly, which is "not below" it
    assert second.decision.passed
    versus = second.card["analysis"]["versus_champion"]
    assert versus["version"] == "1" and versus["rows"] == first.card["data"]["rows"]["test"]
    assert versus["metrics"]["accuracy"]["diff"] == pytest.approx(0.0)
    assert "Against the current champion v1" in (second.run_dir / "report.md").read_text()


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


def test_report_command_rebuilds_and_compares_runs(two_runs):
    from typer.testing import CliRunner

    from tunekit.cli import app

    _, first, second = two_runs
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


def test_champion_tested_on_other_rows_is_re_evaluated_on_these(tiny_config, quiet, tmp_path):
    cfg_path = tiny_config(gate={"min_improvement": -1.0})
    first = pipeline.run(load_config(cfg_path), quiet)
    test_csv = tmp_path / "test.csv"
    lines = test_csv.read_text().splitlines()
    test_csv.write_text("\n".join(lines[:-6]) + "\n")  # new test rows: new test fingerprint
    second = pipeline.run(load_config(cfg_path), quiet)
    assert second.card["data"]["test_fingerprint"] != first.card["data"]["test_fingerprint"]
    champ = second.decision.champion
    assert champ.version == "1" and champ.how == "re-evaluated"
    # the champion scored now on the new rows, not its recorded score on the old ones
    from tunekit import data
    from tunekit.evaluate import score
    from tunekit.models import load_trained

    expected, _ = score(load_trained(first.run_dir / "adapter"), data.prepare(load_config(cfg_path)))
    assert champ.score == pytest.approx(expected["macro_f1"])


def test_resume_with_a_changed_setting_is_refused_before_any_work(tiny_config, quiet, monkeypatch):
    """--resume names the changed setting and how to continue, in a second, before the data check."""
    from tunekit import data as data_stage
    from tunekit.errors import ConfigError

    cfg = load_config(tiny_config(train={"epochs": 1}))
    run_dir = cfg.workspace_dir / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / pipeline.RUN_CONFIG).write_text(json.dumps(cfg.model_dump(mode="json")))
    changed = load_config(tiny_config(train={"epochs": 1, "learning_rate": 0.5}))
    monkeypatch.setattr(data_stage, "prepare", lambda *a, **k: pytest.fail("the data check ran before the refusal"))
    with pytest.raises(ConfigError, match=r"train.learning_rate: 0.005 when the run started, 0.5 now\). .*--set train.learning_rate=0.005\)"):
        pipeline.run(changed, quiet, resume="r1")
    with pytest.raises(ConfigError, match="--resume nope: no such run .*runs there: r1"):
        pipeline.run(changed, quiet, resume="nope")


def test_a_classifier_that_predicts_one_class_is_called_out(tiny_config, quiet, monkeypatch):
    """Planted: the model's test probabilities all favour one label. The card and the console say
    so in words, and no temperature is applied to such a model."""
    import numpy as np

    from tunekit import evaluate
    from tunekit.evaluate.metrics import classification_metrics

    real = evaluate.score

    def one_class(model, data, batch_size=64):
        _, probs = real(model, data, batch_size)
        probs = np.full_like(probs, 0.1)
        probs[:, 1] = 0.8
        return classification_metrics(np.asarray(list(data.test["label"])), probs.argmax(1), data.labels), probs

    monkeypatch.setattr(evaluate, "score", one_class)
    console = Console(record=True, width=200)
    outcome = pipeline.run(load_config(tiny_config(train={"epochs": 1})), console)
    assert outcome.card["analysis"]["collapsed"] == {"label": "refund", "rows": 30, "labels": 3}  # labels sorted: card, refund, transfer
    assert outcome.card["analysis"]["calibration"]["applied"] is False
    assert "predicts one class" in console.export_text() and "one class for every row" in (outcome.run_dir / "report.md").read_text()
