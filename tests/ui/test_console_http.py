"""The console's security rules and views without a browser (FastAPI's TestClient, no model, no worker):
sign-in and its CSRF, sessions ending with their key, no open redirect, the forwarder's allowlist,
run ids that cannot leave ``runs/``, and the production view's buckets from a real request log.
"""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from tunekit.artifacts import Workspace
from tunekit.serve.keys import KeyStore
from tunekit.serve.requestlog import RequestLog
from tunekit.serve.settings import ServeSettings
from tunekit.service.app import create_service_app
from tunekit.ui import views


@pytest.fixture
def served(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    store = KeyStore(workspace.keys_db)
    tokens = {scope: store.create(scope, scope)[0] for scope in ("admin", "fine-tune")}
    with TestClient(create_service_app(ServeSettings(workspace=str(workspace.root), workers=0, rate_limit_per_minute=0))) as http:
        yield http, workspace, store, tokens


def sign_in(http: TestClient, token: str, next_page: str = "/ui/runs"):
    form = http.get("/ui/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)[1]
    return http.post("/ui/signin", data={"key": token, "csrf": csrf, "next": next_page}, follow_redirects=False)


def test_sign_in_needs_the_forms_token_and_goes_only_to_console_pages(served):
    http, _, _, tokens = served
    assert http.post("/ui/signin", data={"key": tokens["admin"], "csrf": "guess"}, follow_redirects=False).status_code == 403
    answer = sign_in(http, tokens["admin"], next_page="//evil.example/ui/runs")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/runs"  # no open redirect
    assert "HttpOnly" in answer.headers["set-cookie"] and "SameSite=strict" in answer.headers["set-cookie"]


def test_a_revoked_key_ends_its_session(served):
    http, _, store, tokens = served
    sign_in(http, tokens["fine-tune"])
    assert http.get("/ui/runs").status_code == 200
    store.revoke(tokens["fine-tune"].split("-")[1])
    answer = http.get("/ui/runs", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/signin")


def test_the_forwarder_needs_a_session_a_csrf_token_and_a_known_api(served):
    http, _, _, tokens = served
    assert http.get("/ui/api/v1/files").status_code == 401
    sign_in(http, tokens["fine-tune"])
    page = http.get("/ui/jobs").text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)[1]
    assert http.get("/ui/api/v1/files").json()["data"] == []
    assert http.post("/ui/api/v1/fine_tuning/jobs", json={}).json()["error"]["code"] == "csrf_failed"
    refused = http.post("/ui/api/v1/adapters/x", headers={"x-csrf-token": csrf})
    assert refused.status_code == 404 and "not an API the console forwards" in refused.json()["error"]["message"]
    # the API's own checks answer through the console, with the API's status and message
    answer = http.post("/ui/api/v1/fine_tuning/jobs", json={"model": "nope", "training_file": "file-x"}, headers={"x-csrf-token": csrf})
    assert answer.status_code == 400 and "not a base model this server fine-tunes" in answer.json()["error"]["message"]


def test_run_ids_cannot_leave_the_runs_folder_and_user_errors_are_pages_with_their_status(served):
    http, workspace, _, tokens = served
    (workspace.root / "config.json").write_text('{"name": "x"}')  # would pass for a run folder
    sign_in(http, tokens["admin"])
    for run_id in ("..%2F..", ".hidden", "..%2Fws"):
        answer = http.get(f"/ui/runs/{run_id}")
        assert answer.status_code == 404, run_id
    from tunekit.errors import NotFound
    from tunekit.ui.session import Session

    with pytest.raises(NotFound):  # `..` itself, which an HTTP client normalises away before it is sent
        views.find_run(workspace, Session("s", None, None), "..")
    answer = http.get("/ui/production?window=2y")
    assert answer.status_code == 404 and "choose one of 1h, 6h, 24h, 7d" in answer.text
    assert http.get("/ui/models/nope/promote?version=1").status_code == 404


def test_production_buckets_rate_latency_errors_and_flags_from_the_request_log(tmp_path):
    workspace = Workspace(tmp_path)
    now = time.time()
    with RequestLog(workspace.serving_db) as log:
        for i in range(10):
            log.log({"id": f"r{i}", "created_at": now - 120 + i, "route": "/v1/chat/completions", "model": "m", "status": 500 if i == 0 else 200,
                     "latency_ms": 10.0 * (i + 1), "flags": [{"kind": "pii", "where": "input", "detail": "email", "action": "flag"}] if i < 3 else []})
    traffic = views.production(workspace, "1h", now=now)
    assert traffic["requests"] == 10 and traffic["errors"] == 1
    [point] = traffic["points"]  # one-minute buckets: all ten fall into the same one
    assert point["rate_per_min"] == 10 and point["error_rate"] == pytest.approx(0.1) and point["p50_ms"] == 60.0
    assert traffic["flag_counts"] == [{"kind": "pii", "where": "input", "action": "flag", "n": 3}] and len(traffic["flagged"]) == 3


def test_tunekit_ui_serves_the_service_app_with_a_one_time_admin_key_revoked_on_exit(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import tunekit.serve.app
    from tunekit.cli import app

    seen = {}

    def fake_serve(settings, served_app):  # instead of uvicorn: what would have been served, and the key while it runs
        seen["settings"], seen["console"] = settings, served_app.state.console
        seen["active"] = [k for k in KeyStore(Workspace(tmp_path).keys_db).list() if k.revoked_at is None]

    monkeypatch.setattr(tunekit.serve.app, "serve", fake_serve)
    result = CliRunner().invoke(app, ["ui", "--workspace", str(tmp_path), "--port", "8799", "--workers", "0"])
    assert result.exit_code == 0, result.output
    [key] = seen["active"]
    assert key.scope == "admin" and f"tk-{key.key_id}-" in result.output and "http://127.0.0.1:8799/ui" in result.output
    assert seen["settings"].workers == 0 and seen["console"].workspace.root == tmp_path  # the service app, with the console mounted
    assert KeyStore(Workspace(tmp_path).keys_db).list()[0].revoked_at is not None  # revoked when the command stopped
