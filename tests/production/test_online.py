"""``tunekit monitor`` with a challenger: per-arm comparison, the live decision carried out and audited,
and per-slice live accuracy, on request logs written here with known accuracies."""

from __future__ import annotations

import random
import sqlite3
import time
import uuid

import pytest

from tests.monitor.conftest import LABELS, HashEmbedder, banking
from tunekit import registry
from tunekit.monitor import MonitorSettings, run
from tunekit.serve.deployment import DeploymentState, read_state, write_state
from tunekit.serve.requestlog import RequestLog


@pytest.fixture
def registered(keyword_model_dir, tmp_path):
    """A registry in ``tmp_path`` with `intent` v1 (champion) and v2, both the keyword model's folder."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlc = registry.client(uri)
    for _ in range(2):
        run_id = registry.log_run(mlc, "intent", tmp_path, params={}, metrics={}, tags={}, artifacts=[("adapter", keyword_model_dir)])
        registry.register(mlc, "intent", run_id, {})
    registry.promote(mlc, "intent", "1", reason="first")
    return mlc, uri


def _wrong(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % len(LABELS)]


def log_arms(workspace, n: int, champion_rate: float, challenger_rate: float, mode: str = "shadow", seed: int = 0,
             metadata=None, labelled: bool = True) -> None:
    """``n`` requests with feedback labels: the champion right with ``champion_rate``; the challenger (v2) as a
    shadow of every request, or as a canary answering its own requests, right with ``challenger_rate``."""
    rng = random.Random(seed)
    rows = banking(n, seed=seed + 5)
    with RequestLog(workspace / "serving.db") as log:
        feedback = []
        for i, (text, label) in enumerate(rows):
            canary = mode == "canary" and i % 2 == 1
            rate, version = (challenger_rate, "2") if canary else (champion_rate, "1")
            answer = label if rng.random() < rate else _wrong(label)
            rid = f"req-{uuid.uuid4().hex}"
            meta = metadata(i, label, answer) if metadata else None
            request = {"inputs": [text], "arm": "canary" if canary else "champion"} | ({"metadata": meta} if meta else {})
            log.log({"id": rid, "route": "/v1/classify", "model": "intent", "version": version, "status": 200, "latency_ms": 5.0,
                     "request": request, "response": [{"label": answer, "score": 0.9}], "flags": []})
            if mode == "shadow":
                shadow = label if rng.random() < challenger_rate else _wrong(label)
                log.log({"id": f"{rid}-shadow", "route": "/v1/classify", "model": "intent", "version": "2", "status": 200, "latency_ms": 4.0,
                         "request": {"inputs": [text], "arm": "shadow", "shadow_of": rid}, "response": [{"label": shadow, "score": 0.8}], "flags": []})
            feedback.append((rid, label))
        log.flush()
    _feedback(workspace, feedback if labelled else [])


def _feedback(workspace, items: list[tuple[str, str]]) -> None:
    """Feedback labels in one transaction (``RequestLog.add_feedback`` commits each durably: slow for hundreds)."""
    with sqlite3.connect(workspace / "serving.db") as conn:
        conn.executemany("INSERT INTO feedback (request_id, created_at, label) VALUES (?, ?, ?)",
                         [(rid, time.time(), label) for rid, label in items])


def _monitor(tmp_path, uri, **kw):
    settings = MonitorSettings(model="intent@champion", workspace=str(tmp_path), tracking_uri=uri, min_requests=10_000, **kw)
    return run(settings, embedder=HashEmbedder())


def _events(mlc, version: str) -> list[dict]:
    return [e for e in registry.history(mlc, "intent") if e["version"] == version]


def test_a_better_shadow_is_promoted_by_the_live_decision_and_audited(registered, tmp_path):
    mlc, uri = registered
    log_arms(tmp_path, 50, champion_rate=1.0, challenger_rate=1.0, mode="off", seed=9)  # before the shadow: not part of the paired comparison
    write_state(tmp_path, DeploymentState(mode="shadow", challenger="intent/2"))
    log_arms(tmp_path, 300, champion_rate=0.6, challenger_rate=0.95)
    result = _monitor(tmp_path, uri, decide=True, margin=0.05)
    online = result.report["online"]
    arms = online["arms"]
    # feedback on a champion request grades its shadow too; the 50 unshadowed requests are left out of the comparison
    assert arms["champion"]["labelled"]["n"] == arms["challenger"]["labelled"]["n"] == 300
    assert arms["challenger"]["labelled"]["accuracy"] > 0.9 > 0.7 > arms["champion"]["labelled"]["accuracy"]
    assert arms["agreement"]["compared"] == 300 and 0.5 < arms["agreement"]["share"] < 0.7
    assert arms["challenger"]["latency_ms_mean"] == 4.0 and arms["champion"]["flagged_share"] == 0.0
    assert online["decision"]["action"] == "promote"
    assert str(registry.champion_version(mlc, "intent").version) == "2"
    promoted = [e for e in _events(mlc, "2") if e["action"] == "promoted"]
    assert promoted and "live decision promote" in promoted[-1]["reason"] and promoted[-1]["replaced"] == "1"
    assert read_state(tmp_path).mode == "off"
    assert "Champion and challenger" in result.files["markdown"].read_text()
    from tunekit.serve.metrics import ServerMetrics

    metrics = ServerMetrics()
    result.push_gauges(metrics)
    text = metrics.render()[0].decode()
    assert 'tunekit_arm_live_accuracy{arm="challenger",model="intent"}' in text and "tunekit_arm_agreement" in text


def test_a_worse_canary_is_rolled_back_and_alerts(registered, tmp_path):
    mlc, uri = registered
    write_state(tmp_path, DeploymentState(mode="canary", challenger="intent/2", share=0.5))
    log_arms(tmp_path, 400, champion_rate=0.95, challenger_rate=0.5, mode="canary")
    result = _monitor(tmp_path, uri, decide=True)
    assert result.report["online"]["decision"]["action"] == "rollback"
    assert any("worse than the champion" in a for a in result.alerts)
    assert str(registry.champion_version(mlc, "intent").version) == "1"
    assert [e["action"] for e in _events(mlc, "2")][-1] == "canary_rolled_back"
    assert read_state(tmp_path).mode == "off"


def test_too_little_feedback_records_how_much_more_is_needed(registered, tmp_path):
    mlc, uri = registered
    write_state(tmp_path, DeploymentState(mode="shadow", challenger="intent/2"))
    log_arms(tmp_path, 40, champion_rate=0.8, challenger_rate=0.85)
    result = _monitor(tmp_path, uri, decide=True)
    decision = result.report["online"]["decision"]
    assert decision["action"] == "need_more_data" and decision["more_per_arm"] > 100
    last = _events(mlc, "2")[-1]
    assert last["action"] == "live_decision" and last["more_per_arm"] == decision["more_per_arm"]
    assert read_state(tmp_path).mode == "shadow" and str(registry.champion_version(mlc, "intent").version) == "1"


def test_a_slice_that_falls_behind_is_an_alert(registered, tmp_path):
    _, uri = registered
    # the app channel gets right answers half as often as the web channel
    log_arms(tmp_path, 240, champion_rate=1.0, challenger_rate=1.0, mode="off", seed=3,
             metadata=lambda i, label, answer: {"channel": "app" if i % 3 == 0 else "web"})
    with RequestLog(tmp_path / "serving.db") as log:  # rewrite half of the app answers as wrong: a channel-specific failure
        rows = [r for r in log.requests_since(0) if r["request"].get("metadata", {}).get("channel") == "app"]
        wrong = [r for k, r in enumerate(rows) if k % 2 == 0]
    extra = []
    with RequestLog(tmp_path / "serving.db") as log:
        for r in wrong:
            rid = f"req-{uuid.uuid4().hex}"
            log.log({"id": rid, "route": "/v1/classify", "model": "intent", "version": "1", "status": 200, "latency_ms": 5.0,
                     "request": r["request"], "response": [{"label": _wrong(r["response"][0]["label"]), "score": 0.9}], "flags": []})
            extra.append((rid, r["response"][0]["label"]))
    _feedback(tmp_path, extra)
    result = _monitor(tmp_path, uri, slice_by="channel", slice_margin=0.1)
    slices = {s["value"]: s for s in result.report["online"]["slices"]["slices"]}
    assert slices["app"]["alert"] and not slices["web"]["alert"]
    assert slices["web"]["accuracy"] == 1.0 and slices["app"]["accuracy"] < 0.8
    assert any(a.startswith("slice channel=app") for a in result.alerts)
    assert "ALERT app" in result.files["markdown"].read_text()


def test_slice_alerts_need_the_margin_and_enough_rows():
    from tunekit.monitor.slices import live_slices

    given = ["a"] * 100
    answered = ["a"] * 60 + ["b"] * 10 + ["a"] * 30  # web 60/70 right... app 30/30
    meta = [{"channel": "web"}] * 70 + [{"channel": "app"}] * 30
    loud = live_slices(given, answered, meta, "channel", margin=0.1, min_n=20)
    assert [s["value"] for s in loud["slices"] if s["alert"]] == ["web"]  # 0.857 against 1.0
    assert not live_slices(given, answered, meta, "channel", margin=0.2, min_n=20)["alerts"]
    assert not live_slices(given, answered, meta, "channel", margin=0.1, min_n=31)["alerts"]  # the app side has only 30
    assert {s["value"] for s in live_slices(given, answered, [{}] * 100, "channel", 0.1, 20)["slices"]} == {"(none)"}


def test_tunekit_deploy_switches_the_state_file_and_audits(registered, tmp_path):
    from typer.testing import CliRunner

    from tunekit.cli import app

    mlc, uri = registered
    runner = CliRunner()
    done = runner.invoke(app, ["deploy", "canary", "intent/2", "--share", "0.25", "--workspace", str(tmp_path), "--tracking-uri", uri,
                               "--reason", "try v2 on a quarter"])
    assert done.exit_code == 0, done.output
    assert "25% of callers" in done.output
    state = read_state(tmp_path)
    assert (state.mode, state.challenger, state.share) == ("canary", "intent/2", 0.25)
    assert _events(mlc, "2")[-1]["action"] == "deployed_canary"
    assert runner.invoke(app, ["deploy", "off", "--workspace", str(tmp_path), "--tracking-uri", uri]).exit_code == 0
    assert read_state(tmp_path).mode == "off" and _events(mlc, "2")[-1]["action"] == "deployed_off"
    bad = runner.invoke(app, ["deploy", "shadow", "intent/7", "--workspace", str(tmp_path), "--tracking-uri", uri])
    assert bad.exit_code != 0 and read_state(tmp_path).mode == "off"
