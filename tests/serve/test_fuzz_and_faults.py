"""The standing robustness suite of issue 14: a bounded fuzz of every route, SIGKILL under load, and
the event-loop check. Each runs against a real uvicorn server on a loopback port, so a dropped
connection is seen as a client would see it.

    pytest tests/serve/test_fuzz_and_faults.py -s     # -s prints the fuzz figures (cases, statuses)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import local_settings
from tests.serve.conftest import live_server
from tunekit.serve import create_app

# What an attacker puts in strings and numbers: lone surrogates (sent as JSON \ud800 escapes), NUL and
# control characters, bidi overrides, a quadratic-pattern bait, and numbers far outside any range.
POISON_STRINGS = ["x \ud800", "\udfff", "\x00", "a\x00b", "\x01\x08\x1b[31m\x7f\x9f", "\u202e\u2066", "\ud83d\ude00", "a" * 9999 + "@", "",
                  " ", "0", "-1", "1e999", "NaN", "greeter", "card"]
HUGE_NUMBERS = [2**64, -(2**64), 2**63, 10**30, -(10**30), 1e308, -1e308, 10**400, 0, -1, 0.5]


def _poison(data, value):
    """``value`` (a JSON value) with each leaf left alone or replaced by a poison value, as drawn by hypothesis."""
    from hypothesis import strategies as st

    if isinstance(value, bool):
        return data.draw(st.sampled_from([value, 2**64, "true", None]))
    if isinstance(value, str):
        return data.draw(st.sampled_from([value, *POISON_STRINGS]))
    if isinstance(value, int | float):
        return data.draw(st.sampled_from([value, *HUGE_NUMBERS]))
    if isinstance(value, list):
        return [_poison(data, v) for v in value]
    if isinstance(value, dict):
        return {k: _poison(data, v) for k, v in value.items()}
    return value


def _body_bytes(body) -> bytes:
    # json.dumps escapes non-ASCII, so a lone surrogate travels as the JSON escape \ud800, as an attacker sends it
    return json.dumps(body).encode("ascii")


class Fuzz:
    """Sends cases to one live server through one pooled client; records 5xx answers and dropped connections."""

    def __init__(self, url: str):
        self.client = httpx.Client(base_url=url, timeout=60)
        self.statuses: Counter[int] = Counter()
        self.failures: list[tuple] = []

    def send(self, method: str, path: str, body=None, query=None) -> None:
        content = None if body is None else _body_bytes(body)
        headers = {"content-type": "application/json"} if content is not None else {}
        try:
            response = self.client.request(method, path, content=content, params=query, headers=headers)
        except httpx.TransportError as exc:  # a dropped connection
            self.failures.append((method, path, repr(body)[:300], "connection", repr(exc)[:300]))
            return
        self.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.failures.append((method, path, repr(body)[:300], response.status_code, response.text[:300]))


def _fuzz_server(fuzz: Fuzz, app, valid: dict[tuple[str, str], dict], examples: int) -> None:
    """Every operation of ``app``'s OpenAPI schema with schemathesis' generated cases, then the POST
    routes' valid bodies (``valid``) with poisoned leaves."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    limits = settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    schema = schemathesis.openapi.from_dict(app.openapi())
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() == "DELETE":
            continue  # fuzzed below with poisoned names only: a generated name could unload the served adapter

        @limits
        @given(case=op.as_strategy())
        def generated(case):
            body = None if type(case.body).__name__ == "NotSet" else case.body
            fuzz.send(case.method, case.formatted_path, body, case.query)

        generated()
    for (method, path), body in valid.items():
        _poisoned(fuzz, limits, method, path, body)()


def _poisoned(fuzz: Fuzz, limits, method: str, path: str, body: dict):
    """A hypothesis test that sends ``body`` to ``method path`` with poisoned leaves."""
    from hypothesis import given
    from hypothesis import strategies as st

    @limits
    @given(data=st.data())
    def poisoned(data):
        fuzz.send(method, path, _poison(data, body))

    return poisoned


def test_fuzz_every_route_no_5xx_and_no_dropped_connection(loaded, greeter, tmp_path, capsys):
    """Bounded (about a minute on 2 CPU cores): schemathesis cases for every route of a classifier and
    a chat model server, plus valid bodies with lone surrogates, NUL and control characters and huge
    numbers in every field. Fails on any 5xx or dropped connection."""
    examples = int(os.environ.get("TUNEKIT_FUZZ_EXAMPLES", "25"))
    started = time.perf_counter()
    figures = {}
    servers = {
        "classifier": (loaded, {("POST", "/v1/classify"): {"inputs": ["where is my card", "money back please"], "task": None},
                                ("POST", "/v1/predict"): {"inputs": ["where is my card"]}}),
        "chat": (greeter, {("POST", "/v1/chat/completions"): {"model": "greeter", "messages": [{"role": "system", "content": "be nice"},
                                                               {"role": "user", "content": "say hi"}], "max_tokens": 3, "temperature": 0.5,
                                                               "top_p": 0.9, "seed": 1, "stop": ["x"], "n": 1, "context": "hello there"},
                           ("POST", "/v1/completions"): {"model": "greeter", "prompt": ["say hi", "say bye"], "max_tokens": 3, "seed": 7},
                           ("POST", "/v1/adapters"): {"name": "other", "source": str(tmp_path / "no-such-adapter")}}),
    }
    failures = []
    for name, (model, valid) in servers.items():
        workspace = tmp_path / name
        settings = local_settings(model=str(tmp_path), workspace=str(workspace), max_new_tokens=8, reload_interval_s=0)
        app = create_app(settings, lambda s, m=model: m)
        with live_server(lambda port, a=app: a) as url:
            fuzz = Fuzz(url)
            first_route = next(iter(valid))[1]
            request_id = fuzz.client.post(first_route, json=valid[("POST", first_route)]).json()["id"]
            valid = {**valid, ("POST", "/v1/feedback"): {"request_id": request_id, "rating": 1, "comment": "thanks", "index": 0,
                                                         **({"label": "card"} if name == "classifier" else {"answer": "hello there"})}}
            _fuzz_server(fuzz, app, valid, examples)
            for poison in POISON_STRINGS:  # path parameters too
                fuzz.send("DELETE", f"/v1/adapters/{quote(poison, safe='', errors='surrogatepass')}x")  # a surrogate as invalid UTF-8
            assert httpx.get(f"{url}/readyz").status_code == 200  # the server is still well after it all
            fuzz.client.close()
        with sqlite3.connect(workspace / "serving.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        failures += fuzz.failures
        figures[name] = {"cases": sum(fuzz.statuses.values()) + len(fuzz.failures), "statuses": dict(sorted(fuzz.statuses.items()))}
    with capsys.disabled():
        print(f"\nfuzz: {json.dumps(figures)}, 5xx or dropped: {len(failures)}, {time.perf_counter() - started:.0f} s")
    assert not failures, failures[:5]
    assert all(f["cases"] > 100 for f in figures.values()), figures  # the fuzz did run


# --- SIGKILL under concurrent load: every acknowledged request is in the log -------------------------

SERVER = """
import sys
from tunekit.serve import serve, ServeSettings
serve(ServeSettings(model=sys.argv[1], workspace=sys.argv[2], port=int(sys.argv[3]), auth=False, durable_log=True,
                    reload_interval_s=0, max_wait_ms=2))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_request(model_dir, tmp_path, capsys):
    """With ``durable_log`` every answered request is committed before its answer leaves: kill -9 in the
    middle of concurrent load, then count. One request that cannot be encoded goes among the good ones."""
    workspace, port = tmp_path / "ws", _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model_dir), str(workspace), str(port)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "not ready"
            time.sleep(0.1)
        acknowledged: list[str] = []
        rejected: list[str] = []
        unexpected: list[tuple] = []
        stop = threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                i = 0
                while not stop.is_set():
                    bad = worker == 0 and i % 5 == 2
                    body = b'{"inputs": ["x \\ud800"]}' if bad else json.dumps({"inputs": [f"where is my card {worker}-{i}"]}).encode()
                    try:
                        response = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
                    except httpx.TransportError:
                        return  # the server is gone
                    (rejected if bad else acknowledged).append(response.headers["x-request-id"])
                    if response.status_code != (422 if bad else 200):
                        unexpected.append((response.status_code, response.text[:200]))
                    i += 1

        threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(30)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(workspace / "serving.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        logged = dict(db.execute("SELECT id, status FROM requests").fetchall())
    with capsys.disabled():
        print(f"\nSIGKILL: {len(acknowledged)} acknowledged, {len(rejected)} rejected (422), "
              f"{sum(1 for i in acknowledged if i in logged)} of the acknowledged in the log, {len(logged)} rows in all")
    assert unexpected == []
    assert len(acknowledged) >= 150 and rejected
    assert [i for i in acknowledged if logged.get(i) != 200] == []  # acknowledged = logged
    assert [i for i in rejected if logged.get(i) != 422] == []  # the bad rows are logged as the 422 they got, and hurt no other


# --- the event loop: /healthz answers while a slow request runs --------------------------------------

def _busy(seconds: float, then):
    """``then``, after ``seconds`` of pure-Python CPU work (what a slow regex over a long text does)."""

    def slow(*args, **kwargs):
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            n += 1
        return then(*args, **kwargs)

    return slow


@pytest.mark.parametrize("slow_part", ["input guardrails", "request log"])
def test_healthz_answers_within_100_ms_while_a_slow_request_runs(loaded, tmp_path, slow_part):
    """The issue's request (texts of "a" * 9999 + "@") with 3 s of CPU work added to one of the steps
    that used to run on the event loop: /healthz must keep answering, relative to that slow request."""
    settings = local_settings(model="m/1", workspace=str(tmp_path / "ws"), max_inputs=64)
    app = create_app(settings, lambda s: loaded)
    runtime = app.state.runtime
    if slow_part == "input guardrails":
        runtime.guardrails.check_input = _busy(3.0, runtime.guardrails.check_input)
    else:
        runtime.log.log = _busy(3.0, runtime.log.log)
    with live_server(lambda port: app) as url, httpx.Client(base_url=url, timeout=60) as probe:
        probe.get("/healthz")  # open the pooled connection before timing
        done = threading.Event()
        timing = {}

        def slow_request() -> None:
            started = time.perf_counter()
            response = httpx.post(f"{url}/v1/classify", json={"inputs": ["a" * 9999 + "@"] * 64}, timeout=120)
            timing["seconds"], timing["status"] = time.perf_counter() - started, response.status_code
            done.set()

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.3)  # the slow request is in flight
        latencies = []
        while not done.is_set():
            started = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
        worker.join()
    assert timing["status"] == 200 and timing["seconds"] >= 3.0
    assert len(latencies) >= 10, latencies  # probes ran all along the slow request
    # before the fix /healthz stalled for the whole slow request; now it answers at once. Relative to the slow
    # request, not an absolute time: a busy CI machine slows every probe, a stalled loop makes them as slow as it
    assert statistics.median(latencies) < timing["seconds"] / 20, latencies
    assert max(latencies) < timing["seconds"] / 4, (max(latencies), timing["seconds"])
