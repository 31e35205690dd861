"""Inference runs off the event loop, one forward pass at a time unless ``concurrent_batches`` allows more; ``serve`` runs uvicorn."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from tests.conftest import local_settings
from tunekit.artifacts import Manifest
from tunekit.models import TrainedModel
from tunekit.serve import LoadedModel, ServeSettings, create_app, serve


class SlowModel(TrainedModel):
    """Predicts uniform probabilities after waiting on ``gate``; records how many passes overlap."""

    def __init__(self, gate: threading.Event):
        info = Manifest(task="classification", name="slow", base_model={"id": "none"}, max_length=16, labels=["a", "b"])
        super().__init__(model=None, tokenizer=None, info=info, path=Path("."))
        self.gate, self.active, self.most_active, self.started = gate, 0, 0, threading.Semaphore(0)
        self._count = threading.Lock()

    def predict_proba(self, texts, pairs=None, batch_size=64):
        with self._count:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.started.release()
        assert self.gate.wait(10)
        with self._count:
            self.active -= 1
        return np.full((len(texts), 2), 0.5, dtype=np.float32)


def test_inference_leaves_the_event_loop_free_and_runs_one_pass_at_a_time(wait_ready):
    gate = threading.Event()
    slow = SlowModel(gate)
    loaded = LoadedModel(model=slow, name="slow", version="1", source="slow/1")
    with TestClient(create_app(local_settings(model="slow/1"), lambda s: loaded)) as client, ThreadPoolExecutor(3) as pool:
        wait_ready(client)
        try:
            calls = [pool.submit(client.post, "/v1/classify", json={"inputs": [f"text {i}"]}) for i in range(2)]
            assert slow.started.acquire(timeout=5)  # one pass is running and blocked...
            health = pool.submit(client.get, "/healthz")
            assert health.result(timeout=5).status_code == 200  # ...and the server still answers
            assert not slow.started.acquire(timeout=0.2)  # the second pass waits for the lock
        finally:
            gate.set()
        assert [call.result(timeout=10).status_code for call in calls] == [200, 200]
    assert slow.most_active == 1


def test_concurrent_batches_lets_that_many_passes_run_at_once(wait_ready):
    gate = threading.Event()
    slow = SlowModel(gate)
    loaded = LoadedModel(model=slow, name="slow", version="1", source="slow/1")
    settings = local_settings(model="slow/1", concurrent_batches=2)
    with TestClient(create_app(settings, lambda s: loaded)) as client, ThreadPoolExecutor(3) as pool:
        wait_ready(client)
        try:
            calls = []
            for i in range(2):  # one after the other, so they cannot share a micro-batch
                calls.append(pool.submit(client.post, "/v1/classify", json={"inputs": [f"text {i}"]}))
                assert slow.started.acquire(timeout=5)  # the second pass starts while the first is blocked
            calls.append(pool.submit(client.post, "/v1/classify", json={"inputs": ["text 2"]}))
            assert not slow.started.acquire(timeout=0.2)  # a third waits for one of the two
        finally:
            gate.set()
        answers = [call.result(timeout=10) for call in calls]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert slow.most_active == 2


def test_each_runtime_has_its_own_default_concurrency_and_onnx_shares_the_threads(monkeypatch):
    import torch

    from tunekit.serve.loading import onnx_threads

    assert ServeSettings(runtime="torch").forward_concurrency == 1
    assert ServeSettings(runtime="onnx").forward_concurrency == 2
    assert ServeSettings(runtime="torch", concurrent_batches=3).forward_concurrency == 3
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert onnx_threads(ServeSettings(runtime="onnx")) == 4  # two passes at once, four threads each
    assert onnx_threads(ServeSettings(runtime="onnx", concurrent_batches=16)) == 1


def test_serve_runs_uvicorn_and_prints_the_urls(monkeypatch, capsys):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    serve(local_settings(model="intent@champion", host="0.0.0.0", port=8123))
    out = capsys.readouterr().out
    assert "http://0.0.0.0:8123" in out and "http://0.0.0.0:8123/docs" in out
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8123
    assert seen["app"].state.settings.model == "intent@champion"
