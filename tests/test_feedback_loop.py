"""The whole production loop on tiny data: serve, feedback with corrected labels, retrain from the
feedback, gate, promote, and the running server answering with the new version."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from tests.conftest import local_settings
from tests.serve.conftest import _wait_ready
from tunekit import data as data_stage
from tunekit import pipeline
from tunekit.config import load_config
from tunekit.pipeline.retrain import feedback_rows, retrain_from_feedback
from tunekit.serve import create_app


@pytest.mark.slow
def test_serve_feedback_retrain_promote_and_hot_swap(tiny_config):
    cfg = load_config(tiny_config(gate={"min_improvement": -1.0, "beat_champion": False}, train={"epochs": 4}))
    first = pipeline.run(cfg, Console(quiet=True))
    assert first.version == "1" and first.decision.alias == "champion"
    test_texts = list(data_stage.prepare(cfg).test["text"])

    settings = local_settings(model="tiny-intent@champion", tracking_uri=cfg.tracking, workspace=str(cfg.workspace_dir), reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        assert _wait_ready(client)["version"] == "1"
        corrections = {"i lost the card in the shop yesterday": "card", "money back for the broken order please": "refund",
                       "wire the money to my sister": "transfer", test_texts[0]: "card"}  # the last one is a test row: left out
        for text, label in corrections.items():
            answer = client.post("/v1/classify", json={"inputs": [text]}).json()
            assert client.post("/v1/feedback", json={"request_id": answer["id"], "label": label}).status_code == 200
        multi = client.post("/v1/classify", json={"inputs": ["my card is stuck in the atm", "b"]}).json()
        refused = client.post("/v1/feedback", json={"request_id": multi["id"], "label": "card"})  # which input? refused on arrival
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "index"
        assert client.post("/v1/feedback", json={"request_id": multi["id"], "label": "card", "index": 0}).status_code == 200

        rows = feedback_rows(cfg, cfg.workspace_dir / "serving.db")
        assert [r.get("unusable", False) for r in rows] == [False] * 5
        assert rows[-1]["text"] == "my card is stuck in the atm" and rows[-1]["label"] == "card"

        second = retrain_from_feedback(cfg, Console(quiet=True))
        assert second.version == "2" and second.decision.passed and second.decision.alias == "champion"
        feedback = json.loads(next((cfg.workspace_dir / "retrain").glob("*/feedback.json")).read_text())
        assert feedback["used"] == 4 and feedback["in_test"] == 1 and feedback["unusable"] == 0
        assert second.card["data"]["rows"]["train"] == first.card["data"]["rows"]["train"] + 4
        # the same test rows, by id and fingerprint: the retrained version compares with its champion (issue 17 item 3)
        assert second.card["data"]["test_fingerprint"] == first.card["data"]["test_fingerprint"]

        assert client.post("/v1/reload").json()["version"] == "2"  # the running server now serves the new champion
        assert client.post("/v1/classify", json={"inputs": ["where is my card"]}).json()["version"] == "2"
