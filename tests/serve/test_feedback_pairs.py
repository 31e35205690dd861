"""Preference pairs from production feedback (``data.feedback_pairs``): served chat answers plus
corrective feedback, through the real server and through the request log API."""

from __future__ import annotations

from pathlib import Path

from tunekit.data.feedback_pairs import pairs_from_feedback
from tunekit.serve.requestlog import RequestLog

HI = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"}]


def _pairs(db: Path, model: str):
    with RequestLog(db) as log:
        return pairs_from_feedback(log.feedback_since(0), model)


def test_served_answers_with_corrections_become_pairs(gen_client):
    """Through the server: chat answers logged, feedback posted; the pairs read back exactly."""
    served = {}
    for messages in (HI, [{"role": "user", "content": "say bye"}]):
        body = gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": messages, "temperature": 0}).json()
        served[body["id"]] = (messages, body["choices"][0]["message"]["content"])
    (hi_id, (hi, hi_answer)), (bye_id, (bye, bye_answer)) = served.items()
    completion = gen_client.post("/v1/completions", json={"model": "greeter", "prompt": "say hi", "temperature": 0}).json()
    for body in ({"request_id": hi_id, "rating": -1, "answer": "hi!"},            # thumbs down with a correction
                 {"request_id": bye_id, "rating": 4, "answer": "see you soon"},   # any rating: the answer is what was wanted
                 {"request_id": hi_id, "answer": f"  {hi_answer} "},               # the model's own answer: skipped, identical
                 {"request_id": bye_id, "rating": -1},                             # no answer: nothing preferred
                 {"request_id": completion["id"], "answer": "hello"}):             # a completions prompt: not a conversation
        assert gen_client.post("/v1/feedback", json=body).status_code == 200, body
    log = gen_client.app.state.runtime.log
    assert log.flush(timeout=10)
    db = log.path

    got = _pairs(db, "greeter")
    assert [(p.request_id, p.prompt, p.chosen, p.rejected) for p in got.pairs] == [
        (hi_id, hi, "hi!", hi_answer), (bye_id, bye, "see you soon", bye_answer)]
    assert got.skipped == {"no_answer": 1, "not_chat": 1, "no_logged_answer": 0, "identical": 1}
    assert got.pairs[0].openai_row() == {
        "input": {"messages": hi}, "preferred_output": [{"role": "assistant", "content": "hi!"}],
        "non_preferred_output": [{"role": "assistant", "content": hi_answer}],
        "metadata": {"request_id": hi_id, "feedback_id": got.pairs[0].feedback_id}}
    assert _pairs(db, "another-model").pairs == []  # feedback on another model's requests is not this model's


def test_pairs_from_the_request_log_rules(tmp_path):
    """Written with the RequestLog API: the rules one by one, oldest feedback first."""
    db = tmp_path / "serving.db"
    chat = "/v1/chat/completions"
    with RequestLog(db) as log:
        def served(rid, messages, answer, model="m", status=200, route=chat):
            log.log({"id": rid, "route": route, "model": model, "version": "1", "status": status,
                     "request": {"model": model, "messages": messages}, "response": [{"text": answer, "finish_reason": "stop"}]})

        q = [{"role": "user", "content": "capital of France?"}]
        served("a", q, "Lyon")
        served("b", q, "Paris")  # the same prompt answered twice: a choice between two answers
        served("c", [*q, {"role": "assistant", "content": "Lyon"}, {"role": "user", "content": "sure?"}], "yes")
        served("d", q, "Paris", model="other")
        served("e", q, "", status=200)
        served("f", [{"role": "user", "content": [{"type": "text", "text": "x"}]}], "y")
        served("g", q, "Paris", status=500)
        log.flush()
        log.add_feedback("b", None, None, "Paris", None, None)            # its own answer: identical, skipped
        log.add_feedback("a", None, None, "Paris", "b was better", None)  # a choice between a and b, sent on the loser
        log.add_feedback("c", -1, None, "No: Paris.", None, None)
        log.add_feedback("d", -1, None, "Paris!", None, None)             # another model: ignored, not counted
        log.add_feedback("e", None, None, "Paris", None, None)            # nothing logged to reject
        log.add_feedback("f", None, None, "z", None, None)                # content parts: not a text conversation
        log.add_feedback("a", 5, None, None, "great", None)               # a rating alone
    got = _pairs(db, "m")
    assert [(p.request_id, p.chosen, p.rejected, len(p.prompt)) for p in got.pairs] == [("a", "Paris", "Lyon", 1), ("c", "No: Paris.", "yes", 3)]
    assert got.pairs[1].prompt[1] == {"role": "assistant", "content": "Lyon"}
    assert got.skipped == {"no_answer": 1, "not_chat": 1, "no_logged_answer": 1, "identical": 1}
    assert got.describe_skipped() == ("1 a rating or comment without a corrected answer, 1 not a chat request (completions prompt or no "
                                      "messages), 1 no logged answer to reject, 1 the corrected answer is the model's own answer")
