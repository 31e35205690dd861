"""The server answers health, readiness and classification requests with a real tiny model."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest
from fastapi.testclient import TestClient

import tunekit.serve
from tests.conftest import local_settings
from tunekit.serve import LoadedModel, ServeSettings, create_app


def test_public_api_is_pinned():
    assert sorted(tunekit.serve.__all__) == ["LoadedModel", "ServeSettings", "create_app", "default_loader", "serve"]


def test_settings_reject_unknown_keys_and_describe_every_field():
    with pytest.raises(ValueError, match="max_input"):
        local_settings(model="x", max_input=3)
    assert all(field.description for field in ServeSettings.model_fields.values())


def test_readyz_is_503_while_loading_then_200(gated_loader, wait_ready):
    release, loader = gated_loader
    with TestClient(create_app(local_settings(model="tiny-intent/7"), loader)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        waiting = client.get("/readyz")
        assert waiting.status_code == 503
        assert waiting.json()["error"]["code"] == "model_loading"
        busy = client.post("/v1/classify", json={"inputs": "my card was declined"})
        assert busy.status_code == 503 and "still loading" in busy.json()["error"]["message"]
        release.set()
        assert wait_ready(client) == {"status": "ready", "model": "tiny-intent", "version": "7"}
        assert client.get("/healthz").status_code == 200


def test_classify_one_string(client, loaded, labels):
    response = client.post("/v1/classify", json={"inputs": "my card was declined"})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "tiny-intent" and body["version"] == "7"
    [prediction] = body["predictions"]
    assert set(prediction["probabilities"]) == set(labels)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
    assert prediction["score"] == prediction["probabilities"][prediction["label"]]
    expected = loaded.model.predict_proba(["my card was declined"])[0]
    np.testing.assert_allclose([prediction["probabilities"][label] for label in labels], expected, rtol=1e-5)


def test_classify_list_keeps_input_order_and_learnt_the_task(client):
    texts = ["please refund the money", "my card was declined", "cancel the transfer", "refund my order"]
    body = client.post("/v1/classify", json={"inputs": texts}).json()
    assert [p["label"] for p in body["predictions"]] == ["refund", "card", "transfer", "refund"]
    for prediction in body["predictions"]:
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["score"] == max(prediction["probabilities"].values())


def test_classify_pairs_as_lists_and_objects(pair_client, loaded_pair, labels):
    pairs = [["customer message 0", "I want a refund"], {"text": "customer message 1", "text_pair": "my card was declined"}]
    body = pair_client.post("/v1/classify", json={"inputs": pairs}).json()
    assert body["model"] == "tiny-pair" and body["version"] == "2"
    assert len(body["predictions"]) == 2
    expected = loaded_pair.model.predict_proba(["customer message 0", "customer message 1"], ["I want a refund", "my card was declined"])
    got = [[p["probabilities"][label] for label in labels] for p in body["predictions"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert [p["label"] for p in body["predictions"]] == [labels[i] for i in expected.argmax(1)]


def test_default_loader_serves_a_model_directory(model_dir, wait_ready):
    with TestClient(create_app(local_settings(model=str(model_dir)))) as client:
        assert wait_ready(client) == {"status": "ready", "model": "tiny-intent", "version": None}
        body = client.post("/v1/classify", json={"inputs": ["refund my order"]}).json()
    assert body["model"] == "tiny-intent" and body["version"] is None
    assert body["predictions"][0]["label"] == "refund"


def test_batch_size_does_not_change_predictions(loaded, wait_ready):
    texts = ["my card was declined", "refund my order", "cancel the transfer", "I lost my card", "where is my refund"]
    results = []
    for batch_size in (1, 32):
        settings = local_settings(model="m", batch_size=batch_size)
        with TestClient(create_app(settings, lambda s: loaded)) as client:
            wait_ready(client)
            results.append(client.post("/v1/classify", json={"inputs": texts}).json()["predictions"])
    for one, many in zip(*results):
        assert one["label"] == many["label"]
        assert one["score"] == pytest.approx(many["score"], abs=1e-5)


def test_one_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="tunekit.serve"):
        client.post("/v1/classify", json={"inputs": "I lost my card"})
        client.post("/v1/classify", json={"inputs": []})
    lines = [r.getMessage() for r in caplog.records if r.name == "tunekit.serve" and r.getMessage().startswith("POST")]
    assert len(lines) == 2
    assert lines[0].startswith("POST /v1/classify 200 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("POST /v1/classify 422 ")


def test_openapi_describes_the_request_and_response(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["ClassifyRequest"]["properties"]["inputs"]["description"]
    assert components["ClassifyRequest"]["examples"]
    assert all(field["description"] for field in components["Prediction"]["properties"].values())
    responses = schema["paths"]["/v1/classify"]["post"]["responses"]
    assert {"200", "413", "422", "503"} <= set(responses)


def test_loaded_model_reads_text_pair_from_the_manifest(loaded, loaded_pair):
    assert isinstance(loaded, LoadedModel)
    assert loaded.expects_pairs is False and loaded_pair.expects_pairs is True


def test_default_loader_resolves_a_registry_reference(model_dir, wait_ready, monkeypatch):
    seen = []

    def resolve(ref, tracking_uri):
        seen.append((ref, tracking_uri))
        return types.SimpleNamespace(path=model_dir, name="tiny-intent", version="3", alias="champion")

    from tunekit import registry

    monkeypatch.setattr(registry, "resolve", resolve)  # the seam registry.resolve_model goes through for a reference
    settings = local_settings(model="tiny-intent@champion", tracking_uri="sqlite:///x.db")
    with TestClient(create_app(settings)) as client:
        assert wait_ready(client) == {"status": "ready", "model": "tiny-intent", "version": "3"}
        assert client.post("/v1/classify", json={"inputs": "I lost my card"}).json()["predictions"][0]["label"] == "card"
    assert seen == [("tiny-intent@champion", "sqlite:///x.db")]
