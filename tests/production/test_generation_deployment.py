"""Shadow and canary for a generation (chat) model: the challenger is a second LoRA adapter on the
champion's base; the champion is the tiny `greeter` of tests/serve, the challenger the same base
taught the two greetings the other way round, so every answer says which arm gave it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import local_settings
from tests.serve.conftest import _train_greeter, _wait_ready
from tunekit.serve import LoadedModel, create_app
from tunekit.serve.deployment import CHALLENGER_ADAPTER, DeploymentState, write_state

HI, BYE = [{"role": "user", "content": "say hi"}], [{"role": "user", "content": "say bye"}]
SWAPPED = {"say hi": "goodbye my friend", "say bye": "hello there"}
CHAT = {"model": "greeter", "temperature": 0, "max_tokens": 8}


@pytest.fixture(scope="module")
def challenger_dir(greeter_dir, tmp_path_factory) -> Path:
    """A second adapter on the greeter's own base, answering the greetings the other way round."""
    base = Path(json.loads((greeter_dir / "tunekit.json").read_text())["base_model"]["id"])
    return _train_greeter(tmp_path_factory.mktemp("swapped"), SWAPPED, base=base, name="greeter-swapped")


@pytest.fixture
def champion(greeter_dir) -> LoadedModel:
    """A champion of this test's own (a deployment puts an adapter on it; the session's greeter stays untouched)."""
    from tunekit.models.causal import load_generator

    return LoadedModel(model=load_generator(greeter_dir), name="greeter", version="1", source="greeter/1")


def _greedy(gen, messages, adapter=None) -> str:
    return gen.generate([gen.encode_chat(messages)], max_new_tokens=8, adapter=adapter)[0].text


def _rows(workspace: Path) -> list[dict]:
    with sqlite3.connect(workspace / "serving.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM requests WHERE route LIKE '/v1/%completions' AND status = 200 ORDER BY created_at")]
    for r in rows:
        r["request"], r["response"] = json.loads(r["request_json"]), json.loads(r["response_json"])
    return rows


def _stream_text(response) -> str:
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    return "".join((c["choices"][0].get("delta") or {}).get("content") or c["choices"][0].get("text") or "" for c in events if c.get("choices"))


def test_shadow_answers_never_reach_the_client_and_are_logged_beside_the_champion(champion, challenger_dir):
    gen = champion.model
    mine = {m[0]["content"]: _greedy(gen, m) for m in (HI, BYE)}
    settings = local_settings(model="greeter/1", deployment_poll_s=0, max_new_tokens=64)
    app = create_app(settings, lambda s: champion)
    params = sum(p.numel() for p in gen.model.parameters())
    with TestClient(app) as client:
        _wait_ready(client)
        put = client.put("/v1/deployment", json={"mode": "shadow", "challenger": str(challenger_dir), "reason": "try the swapped greeter"})
        assert put.status_code == 200, put.text
        assert put.json()["challenger_name"] == "greeter-swapped"
        dep = app.state.deployment
        # one base model in memory: the challenger is an adapter on the champion's own model object
        assert dep.challenger.shared and dep.challenger.model is gen and dep.challenger.adapter in gen.adapters
        assert sum(p.numel() for p in gen.model.parameters()) < 1.1 * params  # only the LoRA matrices were added
        theirs = {m[0]["content"]: _greedy(gen, m, dep.challenger.adapter) for m in (HI, BYE)}
        assert theirs == SWAPPED and mine == {"say hi": "hello there", "say bye": "goodbye my friend"}
        assert all(not m["id"].startswith(CHALLENGER_ADAPTER) for m in client.get("/v1/models").json()["data"])
        assert client.post("/v1/chat/completions", json=CHAT | {"model": dep.challenger.adapter, "messages": HI}).status_code == 404

        answers = [client.post("/v1/chat/completions", json=CHAT | {"messages": m}) for m in (HI, BYE, HI)]
        assert [a.json()["choices"][0]["message"]["content"] for a in answers] == [mine["say hi"], mine["say bye"], mine["say hi"]]
        streamed = client.post("/v1/chat/completions", json=CHAT | {"messages": BYE, "stream": True})
        assert _stream_text(streamed) == mine["say bye"]
        completion = client.post("/v1/completions", json={"model": "greeter", "prompt": "say hi", "max_tokens": 4, "temperature": 0})
        assert completion.status_code == 200
    rows = _rows(Path(settings.workspace))  # the app has shut down: every shadow answer is logged
    shadows = [r for r in rows if r["request"].get("arm") == "shadow"]
    by_id = {r["id"]: r for r in rows}
    champions = {r["id"] for r in rows if r["request"].get("arm") == "champion"}
    assert len(champions) == 5 and {a.json()["id"] for a in answers} | {completion.json()["id"]} <= champions
    assert sorted(r["request"]["shadow_of"] for r in shadows) == sorted(champions)
    for r in shadows:
        parent = by_id[r["request"]["shadow_of"]]
        assert parent["request"]["arm"] == "champion" and parent["version"] == "1"
        assert r["model"] == "greeter-swapped" and r["adapter"] == dep.challenger.adapter
        if "messages" in r["request"]:
            assert r["response"][0]["text"] == SWAPPED[r["request"]["messages"][0]["content"]]  # the challenger's own answer, logged only
            assert parent["response"][0]["text"] == mine[r["request"]["messages"][0]["content"]]
    assert dep.counts["shadow"] == 5 and dep.counts["compared"] == 5 and dep.counts["shadow_failed"] == 0

    # tunekit monitor's per-arm comparison of the same log: agreement and grader pass rates on the shadowed pairs
    from tunekit.monitor.online import lines, online
    from tunekit.monitor.settings import MonitorSettings

    graders = Path(settings.workspace) / "graders.yaml"
    graders.write_text(json.dumps([
        {"type": "string_check", "name": "same", "input": "{{sample.output_text}}", "reference": "{{item.reference}}", "operation": "eq"},
        {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}", "reference": "{{item.champion}}",
         "evaluation_metric": "fuzzy_match", "pass_threshold": 0.0},
        {"type": "label_model", "name": "judge", "model": "any", "labels": ["hello there", "goodbye my friend"], "passing_labels": ["hello there"],
         "input": [{"role": "user", "content": "{{item.prompt}}"}]},
    ]))
    monitor = MonitorSettings(model=str(challenger_dir), workspace=settings.workspace, graders=str(graders), judge=str(challenger_dir))
    section, _ = online(monitor, "greeter", "1", "generation", since=0)  # the challenger: deployment.json's, a folder (no version)
    arms = section["arms"]
    assert arms["champion"]["requests"] == 5 and arms["challenger"]["requests"] == 5
    assert arms["agreement"]["compared"] == 5 and arms["agreement"]["agree"] == dep.counts["agree"] <= 1  # chat pairs always differ
    by_name = {g["name"]: g for g in section["graders"]}
    assert by_name["same"]["total"] == 5 and by_name["same"]["passed"] == dep.counts["agree"]
    assert by_name["close"]["rate"] == 1.0
    assert by_name["judge"]["total"] == 5  # the challenger, loaded as judge, answered each pair (its verdicts are not the point here)
    assert any("grader same (string_check)" in line for line in lines(section))
    from tunekit.serve.gauges import _push_online
    from tunekit.serve.metrics import ServerMetrics

    metrics = ServerMetrics()
    _push_online(metrics, section, {"model": "greeter"})
    text = metrics.render()[0].decode()
    assert "tunekit_shadow_grader_pass_rate" in text and 'grader="close"' in text and "tunekit_arm_agreement" in text


def test_the_state_file_switches_a_generation_server_and_a_failing_shadow_never_fails_the_client(champion, challenger_dir):
    settings = local_settings(model="greeter/1", deployment_poll_s=0, max_new_tokens=64)
    app = create_app(settings, lambda s: champion)
    with TestClient(app) as client:
        _wait_ready(client)
        write_state(Path(settings.workspace), DeploymentState(mode="shadow", challenger=str(challenger_dir)))  # as `tunekit deploy` does
        app.state.deployment.refresh()  # what the watcher runs every deployment_poll_s
        assert app.state.deployment.challenger.model is champion.model
        champion.model.remove_adapter(app.state.deployment.challenger.adapter)  # behind the deployment's back: every shadow call fails
        answers = [client.post("/v1/chat/completions", json=CHAT | {"messages": HI}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3
        assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {"hello there"}
    assert app.state.deployment.counts["shadow_failed"] == 3


def test_canary_share_is_within_binomial_tolerance_and_sticky_per_user(champion, challenger_dir):
    settings = local_settings(model="greeter/1", deployment_poll_s=0, max_new_tokens=64)
    app = create_app(settings, lambda s: champion)
    share, users = 0.3, 150
    with TestClient(app) as client:
        _wait_ready(client)
        put = client.put("/v1/deployment", json={"mode": "canary", "challenger": str(challenger_dir), "share": share})
        assert put.status_code == 200, put.text

        def answer(user: int) -> str:
            body = client.post("/v1/chat/completions", json=CHAT | {"messages": HI, "max_tokens": 4}, headers={"x-user-id": f"user-{user}"})
            return body.json()["choices"][0]["message"]["content"]

        said = {u: answer(u) for u in range(users)}
        canary = sum(text.startswith("goodbye") for text in said.values())  # the challenger says goodbye to "say hi"
        tolerance = 3 * (share * (1 - share) * users) ** 0.5  # three binomial standard deviations
        assert abs(canary - share * users) < tolerance, canary
        for u in range(0, users, 30):  # the same user keeps the same arm
            assert {answer(u) for _ in range(2)} == {said[u]}
        user = next(u for u, text in said.items() if text.startswith("goodbye"))
        streamed = client.post("/v1/chat/completions", json=CHAT | {"messages": HI, "max_tokens": 4, "stream": True},
                               headers={"x-user-id": f"user-{user}"})
        assert _stream_text(streamed) == said[user]  # a streamed request of a canary user is the challenger's too
        assert 'tunekit_deployment_mode{mode="canary"}' in client.get("/metrics").text
        counts = client.get("/v1/deployment").json()["counts"]
    assert counts["canary"] >= canary and counts["champion"] >= users - canary
    rows = _rows(Path(settings.workspace))
    canary_rows = [r for r in rows if r["request"].get("arm") == "canary"]
    assert len(canary_rows) == counts["canary"] and all(r["model"] == "greeter-swapped" for r in canary_rows)
    assert all(r["response"][0]["text"].startswith("goodbye") for r in canary_rows)
