"""Shadow and canary deployments on a running app: switched by the admin route and by the state file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import local_settings
from tests.serve.conftest import _wait_ready
from tunekit.serve import create_app
from tunekit.serve.deployment import DeploymentState, bucket, read_state, write_state

TEXTS = ["my card was declined", "I want a refund", "send a transfer abroad", "the card is blocked", "refund my order"]


@pytest.fixture
def app_client(two_models):
    settings = local_settings(model="tiny-intent/7", deployment_poll_s=0)
    with TestClient(create_app(settings, two_models)) as client:
        _wait_ready(client)
        yield client, Path(settings.workspace)


def _rows(workspace: Path) -> list[dict]:
    with sqlite3.connect(workspace / "serving.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests WHERE route = '/v1/classify' ORDER BY created_at")]


def test_shadow_answers_are_logged_beside_the_champion_and_never_returned(two_models):
    settings = local_settings(model="tiny-intent/7", deployment_poll_s=0)
    with TestClient(create_app(settings, two_models)) as client:
        _wait_ready(client)
        before = {t: client.post("/v1/classify", json={"inputs": t}).json()["predictions"][0]["label"] for t in TEXTS}
        put = client.put("/v1/deployment", json={"mode": "shadow", "challenger": "tiny-intent/8", "reason": "try v8"})
        assert put.status_code == 200, put.text
        assert put.json()["challenger_version"] == "8"
        answers = [client.post("/v1/classify", json={"inputs": t}) for t in TEXTS]
        assert all(a.status_code == 200 and a.json()["version"] == "7" for a in answers)
        assert {t: a.json()["predictions"][0]["label"] for t, a in zip(TEXTS, answers)} == before  # the champion's, unchanged
    rows = _rows(Path(settings.workspace))  # the app has shut down: every shadow answer is logged
    shadows = [r for r in rows if r["version"] == "8"]
    ids = {a.json()["id"] for a in answers}
    assert {json.loads(r["request_json"])["shadow_of"] for r in shadows} == ids
    by_id = {r["id"]: r for r in rows}
    for r in shadows:
        champion_row = by_id[json.loads(r["request_json"])["shadow_of"]]
        assert json.loads(champion_row["request_json"])["arm"] == "champion"
        assert json.loads(r["response_json"])[0]["label"] != json.loads(champion_row["response_json"])[0]["label"]  # the shifted challenger's own answer
    assert json.loads(read_state(Path(settings.workspace)).model_dump_json())["mode"] == "shadow"


def test_a_failing_shadow_never_fails_the_client(app_client):
    client, _ = app_client
    assert client.put("/v1/deployment", json={"mode": "shadow", "challenger": "tiny-intent/9"}).status_code == 200
    answers = [client.post("/v1/classify", json={"inputs": t}) for t in TEXTS]
    assert [a.status_code for a in answers] == [200] * len(TEXTS)
    metrics = client.get("/metrics").text
    assert "tunekit_shadow_failed" in metrics
    assert client.put("/v1/deployment", json={"mode": "canary", "challenger": "tiny-intent/9", "share": 1.0}).status_code == 200
    answer = client.post("/v1/classify", json={"inputs": "refund please"})
    assert answer.status_code == 200 and answer.json()["version"] == "7"  # the failing canary's caller is answered by the champion
    assert client.get("/v1/deployment").json()["counts"]["canary_failed"] == 1


def test_canary_share_is_within_binomial_tolerance_and_sticky(app_client):
    client, _ = app_client
    share, users = 0.3, 400
    assert client.put("/v1/deployment", json={"mode": "canary", "challenger": "tiny-intent/8", "share": share}).status_code == 200
    versions = {u: client.post("/v1/classify", json={"inputs": "refund please"}, headers={"x-user-id": f"user-{u}"}).json()["version"]
                for u in range(users)}
    canary = sum(v == "8" for v in versions.values())
    tolerance = 3 * (share * (1 - share) * users) ** 0.5  # three binomial standard deviations
    assert abs(canary - share * users) < tolerance, canary
    for u in range(0, users, 40):  # the same user keeps the same arm
        again = {client.post("/v1/classify", json={"inputs": t}, headers={"x-user-id": f"user-{u}"}).json()["version"] for t in TEXTS}
        assert again == {versions[u]}
    info = client.get("/v1/deployment").json()
    assert info["counts"]["canary"] >= canary and info["mode"] == "canary"


def test_the_split_is_by_bucket_and_a_new_challenger_reshuffles():
    a = [bucket(f"u{i}", "m/8") < 0.5 for i in range(2000)]
    b = [bucket(f"u{i}", "m/9") < 0.5 for i in range(2000)]
    assert 900 < sum(a) < 1100 and sum(x != y for x, y in zip(a, b)) > 800


def test_the_state_file_switches_a_running_server(app_client):
    client, workspace = app_client
    write_state(workspace, DeploymentState(mode="canary", challenger="tiny-intent/8", share=1.0))
    client.app.state.deployment.refresh()  # what the watcher does every deployment_poll_s
    assert client.post("/v1/classify", json={"inputs": "hi"}).json()["version"] == "8"
    write_state(workspace, DeploymentState(mode="off"))
    client.app.state.deployment._mtime = None  # the same second's mtime: force the look
    client.app.state.deployment.refresh()
    assert client.post("/v1/classify", json={"inputs": "hi"}).json()["version"] == "7"


@pytest.mark.parametrize("body, code", [
    ({"mode": "canary"}, "challenger_required"),
    ({"mode": "shadow", "challenger": "tiny-pair/2"}, "invalid_challenger"),  # reads sentence pairs: cannot answer these requests
    ({"mode": "canary", "challenger": "tiny-intent/8", "share": 1.5}, None),
    ({"mode": "sideways", "challenger": "tiny-intent/8"}, None),
])
def test_bad_deployments_are_422_and_change_nothing(app_client, body, code):
    client, workspace = app_client
    response = client.put("/v1/deployment", json=body)
    assert response.status_code == 422, response.text
    if code:
        assert response.json()["error"]["code"] == code
    assert client.get("/v1/deployment").json()["mode"] == "off"
    assert read_state(workspace).mode == "off"
