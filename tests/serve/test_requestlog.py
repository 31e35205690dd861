"""The request log: nothing acknowledged is lost, WAL mode, feedback joined to its request, PII redacted."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from tunekit.errors import TunekitError
from tunekit.serve.requestlog import FeedbackError, RequestLog, redact


def record(i: int | str, **extra) -> dict:
    return {"id": f"req-{i}", "route": "/v1/classify", "model": "intent", "version": "3", "status": 200,
            "latency_ms": 1.5, "request": {"inputs": [f"text {i}"]}, "response": {"label": "refund"}, "flags": []} | extra


def rows_of(path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_every_record_from_many_threads_is_stored_after_close(tmp_path):
    path = tmp_path / "serving.db"
    log = RequestLog(path)

    def write(thread: int) -> None:
        for i in range(125):
            log.log(record(f"{thread}-{i}"))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    ids = {row[0] for row in rows_of(path, "SELECT id FROM requests")}
    assert ids == {f"req-{t}-{i}" for t in range(8) for i in range(125)}
    assert log.dropped == 0
    log.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        log.log(record("late"))


def test_wal_mode_schema_version_and_reopen(tmp_path):
    path = tmp_path / "serving.db"
    with RequestLog(path) as log:
        log.log(record(1))
    assert rows_of(path, "PRAGMA journal_mode") == [("wal",)]
    assert rows_of(path, "SELECT version FROM schema_version") == [(2,)]
    with RequestLog(path) as log:  # an existing database opens as it is
        assert log.count() == 1
    assert rows_of(path, "SELECT version FROM schema_version") == [(2,)]


def test_a_version_1_log_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "serving.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
        CREATE TABLE requests (id TEXT PRIMARY KEY, created_at REAL NOT NULL, route TEXT, model TEXT, version TEXT, adapter TEXT,
            status INTEGER, latency_ms REAL, key_id TEXT, request_json TEXT, response_json TEXT, flags_json TEXT,
            prompt_tokens INTEGER, completion_tokens INTEGER);
        CREATE TABLE feedback (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, created_at REAL NOT NULL, rating INTEGER,
            label TEXT, answer TEXT, comment TEXT, key_id TEXT);
        INSERT INTO requests (id, created_at, status) VALUES ('req-old', 1.0, 200);
        INSERT INTO feedback (request_id, created_at, rating) VALUES ('req-old', 2.0, 1);
    """)
    conn.close()
    with RequestLog(path) as log:
        log.add_feedback("req-old", rating=None, label="card", answer=None, comment=None, key_id=None, input_index=1)
        feedback = log.feedback_since(0)
    assert [(f["rating"], f["label"], f["input_index"]) for f in feedback] == [(1, None, None), (None, "card", 1)]
    assert rows_of(path, "SELECT MAX(version) FROM schema_version") == [(2,)]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "serving.db"
    RequestLog(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(TunekitError, match="schema version 99, newer"):
        RequestLog(path)


def test_flushed_record_is_visible_to_another_connection(tmp_path):
    path = tmp_path / "serving.db"
    with RequestLog(path) as log:
        log.log(record(1, key_id="team-a", prompt_tokens=3, completion_tokens=5, adapter="greeter"))
        assert log.flush(timeout=5)
        rows = rows_of(path, "SELECT id, route, model, version, adapter, status, key_id, prompt_tokens, completion_tokens, request_json FROM requests")
        assert rows == [("req-1", "/v1/classify", "intent", "3", "greeter", 200, "team-a", 3, 5, '{"inputs": ["text 1"]}')]
        [row] = log.requests_since(0)
        assert row["request"] == {"inputs": ["text 1"]} and row["response"] == {"label": "refund"} and row["flags"] == []
        assert log.requests_since(time.time() + 60) == []


def test_durable_writes_are_visible_at_once(tmp_path):
    path = tmp_path / "serving.db"
    with RequestLog(path, durable=True) as log:
        for i in range(3):
            log.log(record(i))
            assert rows_of(path, "SELECT COUNT(*) FROM requests") == [(i + 1,)]


def test_durable_write_of_a_duplicate_id_raises_and_the_log_goes_on(tmp_path):
    with RequestLog(tmp_path / "serving.db", durable=True) as log:
        log.log(record(1))
        with pytest.raises(sqlite3.IntegrityError):
            log.log(record(1))
        log.log(record(2))
        assert log.count() == 2 and log.dropped == 1


def test_bad_records_fail_in_the_caller(tmp_path):
    with RequestLog(tmp_path / "serving.db") as log:
        with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
            log.log(record(1, colour="red"))
        with pytest.raises(ValueError, match="`id` is required"):
            log.log({"route": "/v1/classify"})
        with pytest.raises(ValueError, match="`response` is not JSON-serialisable"):
            log.log(record(2, response={1, 2}))


def test_feedback_is_stored_and_joined_with_its_request(tmp_path):
    with RequestLog(tmp_path / "serving.db") as log:
        log.log(record(1))
        log.log(record(2))
        # no flush: add_feedback finds a request that is still queued
        first = log.add_feedback("req-2", rating=-1, label="card", answer=None, comment="wrong label", key_id="team-a")
        second = log.add_feedback("req-1", rating=None, label=None, answer="a better answer", comment=None, key_id=None)
        assert second > first
        feedback = log.feedback_since(0)
    assert [(f["request_id"], f["rating"], f["label"], f["answer"], f["comment"], f["key_id"]) for f in feedback] == [
        ("req-2", -1, "card", None, "wrong label", "team-a"),
        ("req-1", None, None, "a better answer", None, None),
    ]
    assert feedback[0]["request"]["id"] == "req-2" and feedback[0]["request"]["response"] == {"label": "refund"}
    assert feedback[0]["id"] == first


def test_feedback_on_an_unknown_request_is_404(tmp_path):
    with RequestLog(tmp_path / "serving.db") as log, pytest.raises(FeedbackError) as caught:
        log.add_feedback("nope", rating=1, label=None, answer=None, comment=None, key_id=None)
    err = caught.value
    assert (err.http_status, err.code, err.param) == (404, "request_not_found", "request_id")
    assert "'nope'" in str(err)


@pytest.mark.parametrize(("rating", "label", "answer", "param"), [
    (None, None, None, None), (None, "", "", None), (6, None, None, "rating"), (-2, None, None, "rating"), (True, None, None, "rating"),
])
def test_invalid_feedback_is_422(tmp_path, rating, label, answer, param):
    with RequestLog(tmp_path / "serving.db") as log:
        log.log(record(1))
        with pytest.raises(FeedbackError) as caught:
            log.add_feedback("req-1", rating=rating, label=label, answer=answer, comment=None, key_id=None)
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (422, "invalid_feedback", param)


def test_pii_is_redacted_by_default(tmp_path):
    text = "mail jane.doe@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958, IBAN DE89 3704 0044 0532 0130 00, from 10.0.0.12"
    assert redact(text) == "mail [EMAIL], card [CARD], call [PHONE], IBAN [IBAN], from [IP]"
    assert redact({"messages": [{"role": "user", "content": "jane@example.com"}], "n": 1}) == {"messages": [{"role": "user", "content": "[EMAIL]"}], "n": 1}
    assert redact("order 42 costs 19.99 on 2024-05-01") == "order 42 costs 19.99 on 2024-05-01"
    path = tmp_path / "serving.db"
    with RequestLog(path) as log:
        log.log(record(1, request={"inputs": ["I am jane@example.com"]}, response={"text": "hi jane@example.com"}))
        log.add_feedback("req-1", rating=None, label=None, answer="write to jane@example.com", comment=None, key_id=None)
    assert rows_of(path, "SELECT request_json, response_json FROM requests") == [('{"inputs": ["I am [EMAIL]"]}', '{"text": "hi [EMAIL]"}')]
    assert rows_of(path, "SELECT answer FROM feedback") == [("write to [EMAIL]",)]
    with RequestLog(tmp_path / "raw.db", redact=False) as log:
        log.log(record(1, request={"inputs": ["I am jane@example.com"]}))
        log.flush()
        assert log.requests_since(0)[0]["request"] == {"inputs": ["I am jane@example.com"]}
