"""`task: regression` through the real pipeline on the tiny BERT.

The synthetic task: short intent texts with 0-4 copies of the word "urgent"; the target is
100 + 10 per "urgent" plus a little noise, so it sits in the hundreds (which standardising the
target has to cope with) and a model that counts the word explains most of its variance.
"""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import yaml
from rich.console import Console

from tests.conftest import INTENTS
from tunekit import pipeline
from tunekit.config import load_config
from tunekit.errors import ConfigError, ModelError


def urgency_rows(n: int, seed: int) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    phrases = [p for texts in INTENTS.values() for p in texts]
    filler = ["please", "today", "again", "hi", "thanks", "now", "help"]
    rows = []
    for _ in range(n):
        k = rng.randint(0, 4)
        words = rng.choice(phrases).split() + ["urgent"] * k + rng.sample(filler, 1)
        rng.shuffle(words)
        rows.append((" ".join(words), round(100 + 10 * k + rng.gauss(0, 1), 3)))
    return rows


def write_config(folder, tiny_bert, **eval_) -> str:
    for name, rows in (("train.csv", urgency_rows(160, 1)), ("test.csv", urgency_rows(50, 2))):
        with (folder / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "score"])
            writer.writerows(rows)
    raw = {
        "name": "tiny-urgency", "task": "regression", "workspace": str(folder / "ws"),
        "data": {"train": "train.csv", "test": "test.csv", "label_column": "score"},
        "model": {"base": str(tiny_bert), "max_length": 32},
        "method": {"kind": "lora", "r": 8, "alpha": 16},
        "train": {"epochs": 12, "batch_size": 8, "learning_rate": 5e-3, "head_learning_rate": 2e-2,
                  "early_stopping_patience": 0, "warmup_ratio": 0.0},
        "eval": {"bootstrap_resamples": 300, **eval_},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_bert):
    """Two identical seeded runs: the first becomes champion, the second meets it."""
    folder = tmp_path_factory.mktemp("regression")
    cfg = load_config(write_config(folder, tiny_bert))
    console = Console(record=True, width=200)
    first = pipeline.run(cfg, console)
    second = pipeline.run(cfg, Console(quiet=True))
    return cfg, first, second, console.export_text()


def test_fine_tuned_regressor_learns_the_target_and_the_report_shows_it(two_runs):
    cfg, outcome, _, printed = two_runs
    card = outcome.card
    assert cfg.eval.primary == "rmse" and card["task"] == "regression"
    m, b = card["model"]["metrics"], card["baseline"]["metrics"]
    test_y = np.array([row[1] for row in urgency_rows(50, 2)])
    assert m["r2"] > 0.6, m
    assert m["rmse"] < 0.6 * test_y.std()  # the mean predictor's RMSE is the target's std
    assert card["baseline"]["name"] == "tfidf-ridge" and 0 < b["r2"] < 1
    versus = card["analysis"]["versus_baseline"]
    assert set(versus) == {"mse", "rmse", "mae", "r2"}
    assert versus["rmse"]["b"] == pytest.approx(m["rmse"]) and versus["rmse"]["lower_is_better"]
    assert versus["rmse"]["low"] <= versus["rmse"]["diff"] <= versus["rmse"]["high"]
    assert {s["slice"].split("=")[0] for s in card["analysis"]["slices"]} >= {"length", "target"}
    assert "calibration" not in card["analysis"] and "mcnemar" not in card["analysis"] and card.get("label_noise") is None
    md = (outcome.run_dir / "report.md").read_text()
    assert "![predicted_vs_true](predicted_vs_true.png)" in md and (outcome.run_dir / "predicted_vs_true.png").is_file()
    assert "rmse **(primary)** (lower is better)" in md and "Not computed for regression" in md
    page = (outcome.run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    # the printed summary says better/worse in words, in the metric's direction
    assert "rmse (lower is better)" in printed
    word = "better" if m["rmse"] < b["rmse"] else "worse"
    assert f"is {word} than the baseline's" in printed


def test_target_is_standardised_on_train_and_predictions_come_back_in_its_units(two_runs):
    from tunekit import data as data_stage
    from tunekit.models import load_trained

    cfg, outcome, _, _ = two_runs
    manifest = json.loads((outcome.run_dir / "adapter" / "tunekit.json").read_text())
    train_y = np.asarray(data_stage.prepare(cfg).train["label"])
    assert manifest["task"] == "regression" and manifest["labels"] == []
    assert manifest["target"]["mean"] == pytest.approx(train_y.mean()) and manifest["target"]["std"] == pytest.approx(train_y.std())
    assert "temperature" not in manifest and manifest["metrics"]["rmse"] == pytest.approx(outcome.card["model"]["metrics"]["rmse"])
    model = load_trained(outcome.run_dir / "adapter")
    with open(outcome.run_dir / "predictions.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    values = model.predict([r["text"] for r in rows[:8]])
    np.testing.assert_allclose(values, [float(r["predicted"]) for r in rows[:8]], rtol=1e-5)
    assert 90 < values.mean() < 150  # in the target's units, not the standardised scale
    with pytest.raises(ModelError, match="call predict()"):
        model.predict_proba(["urgent urgent"])
    # early stopping keeps the epoch with the lowest validation RMSE
    history = outcome.card["train"]["history"]
    assert outcome.card["train"]["best_epoch"] == 1 + int(np.argmin([h["val_rmse"] for h in history]))
    assert outcome.card["train"]["best_score"] == pytest.approx(min(h["val_rmse"] for h in history))
    assert all("val_r2" in h for h in history)


def test_second_run_meets_the_champion_in_the_right_direction(two_runs):
    from tunekit.report.compare import compare

    _, first, second, _ = two_runs
    assert first.decision.passed and "lower is better" in first.decision.summary()
    champ = second.decision.champion
    assert champ.version == "1" and champ.how == "recorded"
    assert champ.score == pytest.approx(first.card["model"]["metrics"]["rmse"])
    assert second.decision.passed and "not above champion v1's" in second.decision.summary()
    versus = second.card["analysis"]["versus_champion"]
    assert versus["rows"] == 50 and versus["metrics"]["rmse"]["diff"] == pytest.approx(0.0, abs=1e-9)
    result, md = compare(first.run_dir, second.run_dir, resamples=200)
    assert result["mcnemar"] is None and "rmse (lower is better)" in md and "McNemar" not in md


def test_config_defaults_and_checks_for_regression(tmp_path):
    def load(text):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        return load_config(path)

    assert load("name: x\ntask: regression\ndata: {train: a.csv}\n").eval.primary == "rmse"
    assert load("name: x\ntask: regression\ndata: {train: a.csv}\neval: {primary: r2}\n").eval.primary == "r2"
    with pytest.raises(ConfigError, match="`eval.primary` is 'macro_f1', which does not apply to task regression; use one of rmse, mae, mse, r2"):
        load("name: x\ntask: regression\ndata: {train: a.csv}\neval: {primary: macro_f1}\n")
    with pytest.raises(ConfigError, match="does not apply to task classification"):
        load("name: x\ndata: {train: a.csv}\neval: {primary: rmse}\n")
    with pytest.raises(ConfigError, match="`eval.suite` holds label cases"):
        load("name: x\ntask: regression\ndata: {train: a.csv}\neval: {suite: s.yaml}\n")
