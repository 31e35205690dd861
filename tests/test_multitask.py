"""Multi-task classification (`data.task_column`): one encoder, one head, each row within its own task."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from rich.console import Console

from tests.conftest import synthetic_rows, tiny_config_in
from tunekit import pipeline
from tunekit.data import multitask
from tunekit.config import load_config
from tunekit.errors import ConfigError, DataError

MOOD_WORDS = {"urgent", "now"}


def _mood(text: str) -> str:
    return "urgent" if MOOD_WORDS & set(text.split()) else "calm"


def _write(path, rows: list[tuple[str, str]]) -> None:
    """Every text twice: once for the `intent` task, once for the `mood` task (a label the same
    text gets in the other task), so a head without the restriction could not fit both."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "task"])
        for text, intent in rows:
            writer.writerow([text, intent, "intent"])
            writer.writerow([text, _mood(text), "mood"])


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory, tiny_bert):
    """``(cfg, outcome)``: one two-task run, read by the report test and retrained by the feedback test."""
    folder = tmp_path_factory.mktemp("multitask")
    tiny_config = tiny_config_in(folder, tiny_bert)
    _write(folder / "train.csv", synthetic_rows(40, seed=1))
    _write(folder / "test.csv", synthetic_rows(10, seed=2))
    cfg = load_config(tiny_config(data={"train": "train.csv", "test": "test.csv", "task_column": "task"}, method={"kind": "full"},
                       train={"learning_rate": 2e-3},
                       eval={"robustness_sample": 0, "explain_samples": 0, "calibrate": False}, gate={"min_improvement": -1.0}))
    return cfg, pipeline.run(cfg, Console(quiet=True))


def test_the_restriction_is_exactly_one_softmax_per_task():
    labels = ["intent:card", "intent:refund", "intent:transfer", "mood:calm", "mood:urgent"]
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 3])
    tasks = multitask.row_tasks(y, labels)
    restricted = multitask.restrict(torch.softmax(logits, 1).detach().numpy(), tasks, labels)
    for row, task in enumerate(tasks):
        ids = multitask.tasks_of(labels)[task]
        np.testing.assert_allclose(restricted[row, ids], torch.softmax(logits[row, ids], 0).detach().numpy(), atol=1e-6)
        assert restricted[row, [i for i in range(5) if i not in ids]].sum() == 0
    # training: the other tasks' logits get no gradient, so each label's head row learns from its own task only
    allowed = torch.as_tensor(multitask.allowed_matrix(labels))
    torch.nn.functional.cross_entropy(multitask.mask_logits(logits, y, allowed), y).backward()
    assert logits.grad[:3, 3:].abs().sum() == 0 and logits.grad[3:, :3].abs().sum() == 0
    assert logits.grad[:3, :3].abs().sum() > 0 and logits.grad[3:, 3:].abs().sum() > 0


def test_multitask_run_learns_both_tasks_and_reports_each(multitask_run):
    _, outcome = multitask_run
    manifest = json.loads((outcome.run_dir / "adapter" / "tunekit.json").read_text())
    assert manifest["tasks"] == {"intent": [0, 1, 2], "mood": [3, 4]}
    assert manifest["labels"] == ["intent:card", "intent:refund", "intent:transfer", "mood:calm", "mood:urgent"]
    with (outcome.run_dir / "predictions.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 60
    # every prediction, the model's and the baseline's, lies within the row's own task
    assert all(multitask.task_of(r["predicted"]) == multitask.task_of(r["label"]) for r in rows)
    assert all(multitask.task_of(r["baseline_predicted"]) == multitask.task_of(r["label"]) for r in rows)
    per_task = {t: np.mean([r["predicted"] == r["label"] for r in rows if multitask.task_of(r["label"]) == t]) for t in ("intent", "mood")}
    assert per_task["intent"] >= 0.8 and per_task["mood"] >= 0.8, per_task  # chance: 0.33 and about 0.5
    task_slices = {s["slice"]: s for s in outcome.card["analysis"]["slices"] if s["slice"].startswith("task=")}
    assert set(task_slices) == {"task=intent", "task=mood"} and task_slices["task=intent"]["n"] == 30
    assert task_slices["task=intent"]["accuracy"] == pytest.approx(per_task["intent"])
    tasks = outcome.card["analysis"]["tasks"]  # each task against the baseline, with an interval, in the card and the gate
    assert set(tasks) == {"intent", "mood"} and all(r["low"] <= r["diff"] <= r["high"] for r in tasks.values())
    assert tasks["mood"]["rows"] == 30 and "Each task against the baseline" in (outcome.run_dir / "report.md").read_text()
    assert any("tasks beats its baseline" in r or r.startswith("task ") for r in outcome.decision.reasons)
    _check_served(outcome.run_dir / "adapter")


def _check_served(adapter_dir) -> None:
    """The served model needs the task of its inputs and answers within that task's labels."""
    from fastapi.testclient import TestClient

    from tests.conftest import local_settings
    from tunekit.models import load_trained
    from tunekit.serve import LoadedModel, create_app

    loaded = LoadedModel(model=load_trained(adapter_dir), name="tiny-intent", version="1", source="tiny-intent/1")
    with TestClient(create_app(local_settings(model="tiny-intent/1"), lambda s: loaded)) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
        missing = client.post("/v1/classify", json={"inputs": ["the card is late urgent"]})
        assert missing.status_code == 400 and "intent, mood" in missing.json()["error"]["message"]
        unknown = client.post("/v1/classify", json={"inputs": ["hi"], "task": "colour"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "task"
        ok = client.post("/v1/classify", json={"inputs": ["my card has not arrived urgent now"], "task": "mood"})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["task"] == "mood"
        probs = body["predictions"][0]["probabilities"]
        assert set(probs) == {"calm", "urgent"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_an_empty_task_cell_names_file_line_and_column(tiny_config, tmp_path):
    from tunekit import data as data_stage

    rows = [(t, label) for t, label in synthetic_rows(5)]
    _write(tmp_path / "train.csv", rows)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ","
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    cfg = load_config(tiny_config(data={"train": "train.csv", "test": "test.csv", "task_column": "task"}))
    with pytest.raises(DataError, match=r'train\.csv line 4: column "task" is empty'):
        data_stage.prepare(cfg)


def test_task_column_is_refused_for_regression(tiny_config):
    with pytest.raises(ConfigError, match="task_column"):
        load_config(tiny_config(task="regression", data={"train": "train.csv", "task_column": "task"}, eval={"primary": "rmse"}))


def test_the_task_column_is_part_of_the_frozen_split_key(tiny_config):
    """The same file read with tasks makes other rows, so it must be frozen apart."""
    from tunekit.data import store

    cfg = load_config(tiny_config())
    sources = store.source_files(cfg)
    multi = load_config(tiny_config(data={"train": "train.csv", "test": "test.csv", "task_column": "label"}))
    assert store.source_key(cfg, sources) != store.source_key(multi, sources)



def test_feedback_on_a_task_becomes_a_training_row_of_that_task(multitask_run):
    """A correction names the label within the request's task; retraining writes it back as label
    and task columns, and the same text corrected in another task is not a duplicate."""
    from tunekit.pipeline.retrain import retrain_from_feedback
    from tunekit.serve.requestlog import RequestLog

    cfg, first = multitask_run
    text = "wire the money to my sister urgent"
    with RequestLog(cfg.workspace_dir / "serving.db", durable=True) as log:
        for i, (task, label) in enumerate((("intent", "transfer"), ("mood", "urgent"))):
            log.log({"id": f"r{i}", "model": cfg.name, "status": 200, "route": "/v1/classify",
                     "request": {"inputs": [text], "task": task}, "response": []})
            log.add_feedback(f"r{i}", None, label, None, None, None)
    second = retrain_from_feedback(cfg, Console(quiet=True))
    assert second.card["data"]["rows"]["train"] == first.card["data"]["rows"]["train"] + 2
    written = next((cfg.workspace_dir / "retrain").glob("*/train.csv")).read_text().splitlines()
    # each row written with its id first (feedback rows: feedback-N), so test ids survive retraining
    assert any(line.startswith("feedback-") and line.endswith(f"{text},transfer,intent") for line in written)
    assert any(line.startswith("feedback-") and line.endswith(f"{text},urgent,mood") for line in written)


def test_a_correction_is_read_within_its_requests_task():
    assert multitask.feedback_label("urgent", {"inputs": ["x"], "task": "mood"}) == "mood:urgent"
    assert multitask.feedback_label("mood:urgent", {"task": "mood"}) == "mood:urgent"
    assert multitask.feedback_label("card", {"inputs": ["x"]}) == "card"  # a single-task request
    assert multitask.feedback_label(3, {"task": "stars"}) == "stars:3"
