"""The web console in a real browser (headless Chromium): sign in, upload, fine-tune and watch the
job live, open the run's report card, compare runs, promote and roll back, chat, and the XSS cases.

The tests share one service (module scope). The job the browser starts and watches is the run, model
and chat partner of the tests after it (``trained``); a test run on its own starts that job through the
API instead, so every test also passes alone. The job trains a tiny Llama in a real ``tunekit worker``
process (the whole lifecycle), so this module takes a minute or two.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.service.test_service_jobs import start_worker, training_file, wait_for

pytestmark = pytest.mark.slow

XSS_MARK = "window.__pwned = 1"
XSS_SCRIPT = f"<script>{XSS_MARK}</script>"
XSS_IMG = f'<img src=x onerror="{XSS_MARK}">'


def pwned(tab) -> bool:
    return bool(tab.page.evaluate("() => window.__pwned === 1"))


def api(live, scope="admin") -> httpx.Client:
    return httpx.Client(base_url=f"{live.url}/v1", headers={"Authorization": f"Bearer {live.keys[scope]}"}, timeout=60)


def worker(live) -> None:
    """One ``tunekit worker`` for the module, stopped when the service fixture ends."""
    if "worker" not in live.state:
        live.state["worker"] = start_worker(live.workspace)


@pytest.fixture
def trained(live) -> dict:
    """``{"job", "model"}`` of a succeeded job: the one the browser started, or one started through the API."""
    if "job" not in live.state:
        worker(live)
        with api(live, "fine-tune") as client:
            name, content = training_file(120)
            upload = client.post("/files", files={"file": (name, content)}, data={"purpose": "fine-tune"})
            assert upload.status_code == 200, upload.text
            job = client.post("/fine_tuning/jobs", json={"model": "tiny", "training_file": upload.json()["id"], "suffix": "ui", "seed": 7,
                                                         "hyperparameters": {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 10}}).json()
            done = wait_for(lambda: (j := client.get(f"/fine_tuning/jobs/{job['id']}").json())["status"] in ("succeeded", "failed", "cancelled") and j,
                            "the job", timeout=600)
        assert done["status"] == "succeeded", done.get("error")
        live.state.update(job=done["id"], model=done["fine_tuned_model"])
    return live.state


def test_sign_in_with_an_api_key_sets_an_httponly_strict_cookie(tab, live):
    page = tab.page
    page.goto("/ui/models")
    assert "/ui/signin" in page.url  # not signed in: the sign-in page, which comes back here after
    page.fill("#key", "tk-00000000-" + "x" * 43)
    page.click("button[type=submit]")
    assert "unknown, revoked or mistyped" in page.text_content(".error")
    tab.shot("signin")
    page.fill("#key", live.keys["fine-tune"])
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/models")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "tunekit_ui"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert live.keys["fine-tune"] not in page.content()  # the key never reaches the page
    # the same scopes as the API: a fine-tune key sees models but may not promote, nor see every project's traffic
    page.goto("/ui/production")
    assert "needs a key of scope 'admin'" in page.text_content(".error")
    # a state change without the session's CSRF token is refused, even with the cookie
    refused = page.request.post(f"{live.url}/ui/api/v1/fine_tuning/jobs", data=json.dumps({"model": "tiny", "training_file": "x"}),
                                headers={"content-type": "application/json"})
    assert refused.status == 403 and refused.json()["error"]["code"] == "csrf_failed"
    tab.no_errors(allowed=("401", "403"))  # the refused key, the refused page and the refused post


def test_every_page_has_a_strict_csp_and_loads_without_console_errors(tab, live):
    tab.sign_in("admin")
    for path in ("/ui/runs", "/ui/models", "/ui/jobs", "/ui/evals", "/ui/production", "/ui/playground"):
        response = tab.page.goto(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert tab.page.locator("nav a.active").count() == 1, path
    # production draws three plotly charts from the bundled plotly.js, under that CSP
    tab.page.goto("/ui/production")
    tab.page.wait_for_selector("#traffic ~ .grid3 .chart .main-svg")
    assert tab.page.locator(".chart .main-svg").count() >= 3
    tab.no_errors()


def test_a_bad_file_shows_its_line_errors_as_text(tab, live):
    tab.sign_in("fine-tune", then="/ui/jobs")
    page = tab.page
    good = json.loads(training_file(3)[1].decode().splitlines()[0])
    rows = [json.dumps(good), json.dumps({"messages": [{"role": XSS_SCRIPT, "content": "hi"}, {"role": "assistant", "content": XSS_IMG}]}),
            "{not json", json.dumps({"messages": 5})]
    page.set_input_files("#upload-file", files=[{"name": "bad.jsonl", "mimeType": "application/jsonl", "buffer": "\n".join(rows).encode()}])
    page.click("#upload-form button")
    page.wait_for_selector("#upload-errors li")
    errors = page.locator("#upload-errors li").all_text_contents()
    assert any(e.startswith("line 2: messages[0].role:") and XSS_SCRIPT in e for e in errors), errors  # the row's text, shown as text
    assert any(e.startswith("line 3: invalid JSON") for e in errors) and any(e.startswith("line 4: messages:") for e in errors), errors
    assert "bad.jsonl was not accepted" in page.text_content("#upload-result")
    tab.shot("jobs-upload-error")
    assert not pwned(tab)
    tab.no_errors(allowed=("400",))


def test_start_a_job_and_watch_it_succeed_with_a_live_loss_curve(tab, live):
    tab.sign_in("admin", then="/ui/jobs")
    page = tab.page
    _, content = training_file(120)
    xss_name = "<img src=x onerror=window.__pwned=1>.jsonl"  # a file name is user content too (a browser sends `"` as %22)
    page.set_input_files("#upload-file", files=[{"name": xss_name, "mimeType": "application/jsonl", "buffer": content}])
    page.click("#upload-form button")
    page.wait_for_selector("#files-table")  # the page reloads with the new file listed
    assert xss_name in page.text_content("#files-table") and not pwned(tab)
    page.select_option("#job-model", "tiny")
    page.fill("#hp-n_epochs", "4")
    page.fill("#hp-batch_size", "8")
    page.fill("#hp-learning_rate_multiplier", "10")
    page.fill("#job-suffix", "ui")
    page.fill("#job-seed", "7")
    tab.shot("jobs")
    page.click("#job-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/jobs/ftjob-[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    assert page.text_content("#job-status") in ("queued", "validating_files", "running")
    worker(live)
    # The tiny job can finish between two of the page's polls, so the test pauses it at its first step (through the
    # API, which is quicker than the page) to see the curve part-drawn, then resumes it with the page's button.
    with api(live) as client:
        wait_for(lambda: any(e["type"] == "metrics" for e in client.get(f"/fine_tuning/jobs/{job_id}/events").json()["data"]),
                 "the first step", timeout=600)
        paused = client.post(f"/fine_tuning/jobs/{job_id}/pause")
        assert paused.status_code == 200, paused.text
    expect(page.locator("#job-status")).to_have_text("paused", timeout=120_000)
    part = int(page.get_attribute("#loss-chart", "data-points") or 0)
    assert part >= 1 and page.is_visible("#resume-job") and not page.is_visible("#pause-job")
    page.click("#resume-job")
    statuses = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # watch without reloading: the status and the curve change in place
        statuses.add(page.text_content("#job-status"))
        if "succeeded" in statuses or "failed" in statuses:
            break
        time.sleep(0.5)
    assert "succeeded" in statuses, f"job ended {statuses}: {page.text_content('#job-error-text')}"
    page.wait_for_selector("#job-run:not([hidden])")
    final = int(page.get_attribute("#loss-chart", "data-points"))
    assert final > part, f"the curve did not grow after the resume: {part} -> {final} points"
    assert page.locator("#loss-chart.js-plotly-plot .scatterlayer .trace").count() >= 1
    expect(page.locator("#events-table tbody tr").first).to_contain_text("The job has successfully completed")  # the last poll's events
    events = page.locator("#events-table tbody tr").all_text_contents()
    assert any("Created fine-tuning job" in e for e in events) and any("3/5 train" in e for e in events)
    tab.shot("job")
    live.state["job"] = job_id
    live.state["model"] = page.text_content("#job-model")
    tab.no_errors()


def test_open_the_run_and_its_report_card_and_compare_two_runs(tab, live, trained):
    job_id = trained["job"]
    tab.sign_in("fine-tune", then="/ui/runs")
    page = tab.page
    row = page.locator("#runs-table tbody tr", has_text=job_id)
    assert "generation" in row.text_content() and ("passed" in row.text_content() or "failed" in row.text_content())
    page.fill("input.filter", "no-such-run")
    assert page.locator("#runs-table tbody tr:visible").count() == 0
    page.fill("input.filter", "")
    tab.shot("runs")
    page.click(f"a[href='/ui/runs/{job_id}']")
    page.wait_for_url(f"**/ui/runs/{job_id}")
    card = page.frame_locator("iframe.report")
    assert "report card" in card.locator("title").text_content() or card.locator("h1").count() >= 1
    assert card.locator("body").text_content().strip()
    page.wait_for_selector("#run-curve .main-svg")
    tab.shot("run")
    # the report card is served with no script allowed at all, in a sandbox
    response = page.request.get(f"{live.url}/ui/runs/{job_id}/report")
    assert "sandbox" in response.headers["content-security-policy"] and "script-src" not in response.headers["content-security-policy"]
    # a second run to compare with: the same config run again is what a team does; here its folder is a copy of the first
    import shutil

    twin = live.workspace.run(job_id + "-twin")
    shutil.copytree(live.workspace.run(job_id), twin)
    page.goto("/ui/runs")
    page.check(f"input.pick[value='{job_id}']")
    assert page.is_disabled("#compare")
    page.check(f"input.pick[value='{twin.name}']")
    page.click("#compare")
    page.wait_for_url("**/ui/runs/compare?**")
    assert page.locator("iframe.report").count() == 2 and page.locator("#compare-table tr.primary").count() == 1
    tab.shot("runs-compare")
    shutil.rmtree(twin)
    tab.no_errors()


def test_promote_and_roll_back_with_a_confirmation_naming_the_change(tab, live, trained):
    from tunekit import registry

    mlc = registry.client(live.workspace.tracking_uri)
    [name] = [m.name for m in mlc.search_registered_models()]
    first = registry.list_versions(mlc, name)[-1]
    if registry.champion_version(mlc, name) is None:  # the tiny model may have failed its gate: make v1 champion first
        registry.promote(mlc, name, str(first.version), "test set-up")
    # a second version of the same run's adapter, as a retrain would register
    second = registry.register(mlc, name, first.run_id, {k: v for k, v in (first.tags or {}).items() if k != registry.EVENTS_TAG})
    tab.sign_in("admin", then=f"/ui/models/{name}")
    page = tab.page
    page.click(f"a[href='/ui/models/{name}/promote?version={second}']")
    assert f"moves from v{first.version} to v{second}" in " ".join(page.text_content("#what-changes").split())
    tab.shot("models-promote-confirm")
    page.fill("#reason", f"better answers {XSS_SCRIPT}")
    page.click("#confirm")
    page.wait_for_url(f"**/ui/models/{name}?done=**")
    assert f"v{second} is now champion (was v{first.version})" in page.text_content(".ok")
    assert registry.champion_version(mlc, name).version == int(second)
    history = page.locator("#history-table tbody tr", has_text="better answers").first.text_content()
    assert "promoted" in history and XSS_SCRIPT in history and "key " in history  # the audit names the key, the reason is text
    page.click(f"a[href='/ui/models/{name}/rollback']")
    assert f"moves from v{second} to v{first.version}" in " ".join(page.text_content("#what-changes").split())
    page.click("#confirm")
    page.wait_for_url(f"**/ui/models/{name}?done=**")
    assert f"rolled back from v{second} to v{first.version}" in page.text_content(".ok")
    assert registry.champion_version(mlc, name).version == first.version
    tab.shot("model")
    page.goto("/ui/models")
    tab.shot("models")
    assert not pwned(tab)
    tab.no_errors()


def test_chat_in_the_playground_with_two_models_side_by_side(tab, live, trained):
    model = trained["model"]
    tab.sign_in("inference", then="/ui/playground")
    page = tab.page
    page.select_option("#model-a", model)
    options = page.locator("#model-a option").all_text_contents()
    assert model in options and all(o.startswith("ft:") for o in options), options  # fine-tuned models only, not the catalogue's bases
    page.select_option("#model-b", model)  # the same model twice: greedy decoding must answer the same
    page.fill("#prompt", f"reverse: fig kiwi lime {XSS_SCRIPT}")
    page.click("#chat-form button[type=submit]")
    page.wait_for_selector("#chat-a .turn.assistant:not(.pending)")
    page.wait_for_selector("#chat-b .turn.assistant:not(.pending)")
    assert page.locator(".turn.error").count() == 0, page.text_content("main")
    max_tokens = int(page.input_value("#max-tokens"))
    assert XSS_SCRIPT in page.text_content("#chat-a .turn.user")  # the prompt, echoed as text
    answer = page.text_content("#chat-a .turn.assistant .text")
    assert page.text_content("#chat-b .turn.assistant .text") == answer
    with api(live) as client:  # the same answer the API gives (greedy)
        reply = client.post("/chat/completions", json={"model": model, "messages": [{"role": "user", "content": f"reverse: fig kiwi lime {XSS_SCRIPT}"}],
                                                       "max_tokens": max_tokens, "temperature": 0}).json()
    assert answer == reply["choices"][0]["message"]["content"]
    tab.shot("playground")
    assert not pwned(tab)
    tab.no_errors()


def test_evals_show_pass_rates_and_failing_items_escaped(tab, live):
    items = [{"item": {"question": "capital of France", "answer": "Paris"}, "sample": {"output_text": "Paris"}},
             {"item": {"question": XSS_SCRIPT, "answer": "Paris"}, "sample": {"output_text": XSS_IMG}},  # a model answer holding HTML
             {"item": {"question": "capital of Italy", "answer": "Rome"}, "sample": {"output_text": "Milan"}}]
    with api(live, "fine-tune") as client:
        ev = client.post("/evals", json={"name": "capitals", "data_source_config": {"type": "custom", "include_sample_schema": True, "item_schema": {
            "type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}, "required": ["question", "answer"]}},
            "testing_criteria": [{"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}]}).json()
        run = client.post(f"/evals/{ev['id']}/runs", json={"name": "baseline answers", "data_source": {"type": "jsonl", "source": {"type": "file_content", "content": items}}}).json()
        wait_for(lambda: client.get(f"/evals/{ev['id']}/runs/{run['id']}").json()["status"] == "completed", "the eval run", timeout=60)
    tab.sign_in("fine-tune", then="/ui/evals")
    page = tab.page
    assert "exact: 33%" in page.text_content(f"#runs-{ev['id']}")
    tab.shot("evals")
    page.click(f"a[href='/ui/evals/{ev['id']}/runs/{run['id']}']")
    page.wait_for_selector("#failing-table")
    failing = page.text_content("#failing-table")
    assert XSS_IMG in failing and XSS_SCRIPT in failing and "Milan" in failing
    page.wait_for_selector(".chart .main-svg")
    tab.shot("eval-run")
    assert not pwned(tab)
    tab.no_errors()


def test_production_shows_traffic_and_guardrail_flags(tab, live, trained):
    with api(live) as client:  # an e-mail address in a prompt: the pii_input guardrail flags the request
        client.post("/chat/completions", json={"model": trained["model"], "max_tokens": 4,
                                               "messages": [{"role": "user", "content": "reverse: mail me at ann@example.com"}]})
    tab.sign_in("admin", then="/ui/production?window=1h")
    page = tab.page
    page.wait_for_selector(".chart .main-svg")
    assert "pii" in page.text_content("main") and page.locator("#flagged-table tbody tr").count() >= 1
    tab.shot("production")
    tab.no_errors()
