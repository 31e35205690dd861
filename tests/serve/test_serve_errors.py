"""Every user mistake gets a 4xx in OpenAI's error shape, with a message that says what and where."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import local_settings
from tunekit.errors import ModelError
from tunekit.serve import ServeSettings, create_app


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("inputs", "status", "code", "param", "message"),
    [
        ([], 422, "empty_inputs", "inputs", "inputs: empty list"),
        (["a card", "fine", "   "], 422, "empty_text", "inputs[2]", "inputs[2]: empty text"),
        ("", 422, "empty_text", "inputs", "inputs: empty text"),
        (["ok", 3], 422, "invalid_type", "inputs[1]", "inputs[1]: expected a string"),
        (7, 422, "invalid_type", "inputs", "inputs: expected a string or a list"),
        (["ok", {"txt": "x"}], 422, "invalid_type", "inputs[1]", "inputs[1]: expected a string"),
        (["a"] * 5, 413, "too_many_inputs", "inputs", "limit of 4 per request (setting max_inputs, --max-inputs)"),
        (["short", "x" * 51], 413, "text_too_long", "inputs[1]", "inputs[1]: 51 characters, more than the limit of 50 per text (setting max_chars, --max-chars)"),
        ([["my card", "was declined"]], 422, "pair_not_expected", "inputs[0]", "this model classifies single texts"),
    ],
)
def test_bad_inputs(client, inputs, status, code, param, message):
    error = error_of(client.post("/v1/classify", json={"inputs": inputs}), status)
    assert error["code"] == code and error["param"] == param
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("inputs", "param", "message"),
    [
        ("just one text", "inputs", "this model classifies sentence pairs"),
        ([["a", "b"], "single"], "inputs[1]", "inputs[1]: got a single text, but this model classifies sentence pairs"),
        ([["a", " "]], "inputs[0][1]", "inputs[0][1]: empty text"),
        ([{"text": "a", "text_pair": ""}], "inputs[0].text_pair", "inputs[0].text_pair: empty text"),
    ],
)
def test_bad_pair_inputs(pair_client, inputs, param, message):
    error = error_of(pair_client.post("/v1/classify", json={"inputs": inputs}), 422)
    assert error["param"] == param and message in error["message"]


def test_body_that_is_not_json(client):
    response = client.post("/v1/classify", content=b'{"inputs": ["unterminated', headers={"content-type": "application/json"})
    error = error_of(response, 422)
    assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [({}, "inputs: required, but missing"), ({"inputs": "x", "input": "y"}, "input: unknown field"), (["x"], "must be a JSON object")],
)
def test_body_of_the_wrong_shape(client, body, message):
    error = error_of(client.post("/v1/classify", json=body), 422)
    assert message in error["message"]


def test_body_that_is_plain_text(client):
    error = error_of(client.post("/v1/classify", content=b"my card", headers={"content-type": "text/plain"}), 422)
    assert "Content-Type: application/json" in error["message"]


def test_unknown_route_and_wrong_method(client):
    assert error_of(client.get("/v2/nothing"), 404)["type"] == "not_found_error"
    assert "GET /v1/classify" in error_of(client.get("/v1/classify"), 405)["message"]


def test_load_failure_is_503_with_the_reason():
    def broken(settings):
        raise ModelError("runs/x: not a tunekit model directory: tunekit.json is missing")

    with TestClient(create_app(local_settings(model="runs/x"), broken)) as client:
        assert client.get("/healthz").status_code == 200
        error = _poll_failed(client)
        assert error["code"] == "model_load_failed" and "tunekit.json is missing" in error["message"]
        assert error["type"] == "service_unavailable"
        classify = error_of(client.post("/v1/classify", json={"inputs": "hello"}), 503)
        assert "failed to load" in classify["message"]


def test_missing_model_path_fails_to_load_with_a_clear_message(tmp_path):
    with TestClient(create_app(local_settings(model=str(tmp_path / "nope")))) as client:
        error = _poll_failed(client)
    assert "no such folder" in error["message"]


def test_unexpected_loader_crash_is_reported_not_hidden():
    def crashing(settings):
        raise RuntimeError("disk on fire")

    with TestClient(create_app(local_settings(model="m"), crashing)) as client:
        assert "RuntimeError: disk on fire" in _poll_failed(client)["message"]


def test_ready_client_still_answers_healthz(client, wait_ready):
    assert wait_ready(client)["model"] == "tiny-intent"


def _poll_failed(client: TestClient, timeout: float = 5.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        error = error_of(client.get("/readyz"), 503)
        if error["code"] == "model_load_failed" or time.monotonic() > deadline:
            return error
        time.sleep(0.02)
