"""Done means: send a real server (the tiny classifier of tests/serve) in-distribution traffic and
another domain's texts; ``tunekit monitor`` reads the server's ``serving.db`` and flags only the second."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import local_settings
from tests.monitor.conftest import HashEmbedder, prepared, recipes
from tests.serve.conftest import _wait_ready
from tunekit.monitor import MonitorSettings, push_latest, reference, run
from tunekit.serve import create_app


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory, model_dir, loaded, train_rows, validation_rows) -> Path:
    """A copy of the served model's directory with a reference built from banking-like training data,
    its validation predictions made by the served model itself."""
    import types

    path = tmp_path_factory.mktemp("served") / "model"
    shutil.copytree(model_dir, path)
    cfg = types.SimpleNamespace(task="classification", name="tiny-intent")
    reference.build(cfg, prepared(train_rows, validation_rows), loaded.model, path, embedder=HashEmbedder())
    return path


def _send(loaded, texts: list[str]) -> str:
    """POST ``texts`` to /v1/classify of a fresh server, 6 per request; returns its workspace once the log is closed."""
    settings = local_settings(model="tiny-intent/7")
    with TestClient(create_app(settings, lambda s: loaded)) as client:
        _wait_ready(client)
        for start in range(0, len(texts), 6):
            response = client.post("/v1/classify", json={"inputs": texts[start:start + 6]})
            assert response.status_code == 200, response.text
    return settings.workspace  # leaving the block shut the server down, which commits the request log


def test_monitor_flags_shifted_traffic_not_in_distribution_traffic(served_dir, loaded, unseen_banking):
    calm = run(MonitorSettings(model=str(served_dir), workspace=_send(loaded, unseen_banking[:120])), embedder=HashEmbedder())
    shifted = run(MonitorSettings(model=str(served_dir), workspace=_send(loaded, recipes(120, seed=21))), embedder=HashEmbedder())

    assert calm.report["traffic"]["requests"] == 20 and calm.report["traffic"]["inputs"] == 120
    assert calm.alerts == [], calm.alerts
    assert calm.status == "ok"

    drifted = {c["name"] for c in shifted.report["checks"] if c["drifted"]}
    assert shifted.status == "alert" and shifted.alerts
    assert {"embedding", "oov_rate", "length_words"} <= drifted
    auc = {c["name"]: c["statistic"] for c in shifted.report["checks"]}["embedding"]
    assert auc > 0.95 and {c["name"]: c["statistic"] for c in calm.report["checks"]}["embedding"] < 0.7

    # the server of that workspace publishes the verdict on /metrics (as its /metrics handler does with push_latest)
    app = create_app(local_settings(model="tiny-intent/7", workspace=str(shifted.out_dir.parents[1])), lambda s: loaded)
    with TestClient(app) as client:
        loaded_name = _wait_ready(client)["model"]
        assert push_latest(app.state.runtime.metrics, app.state.settings.workspace_dir, loaded_name)
        body = client.get("/metrics").text
    assert f'tunekit_drift_alerts{{model="tiny-intent"}} {float(len(shifted.alerts))}' in body
    assert 'tunekit_drift_detected{check="embedding",model="tiny-intent"} 1.0' in body
    assert 'tunekit_drift_statistic{check="embedding",model="tiny-intent"} 1.0' in body
