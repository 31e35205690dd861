"""/v1/evals driven by the official openai client against an in-process app (no models: a fake one)."""

from __future__ import annotations

import json
import time

import openai
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from openai import OpenAI

from tunekit.errors import NotFound
from tunekit.serve import handlers
from tunekit.serve.keys import KeyInfo
from tunekit.service.evals import EvalStore, router

FILES = {("proj-a", "file-qa"): b'{"item": {"question": "2+2", "answer": "4"}}\n\n{"item": {"question": "3+3", "answer": "6"}}\n'}
ANSWERS = {"2+2": "4", "3+3": "7", "1+1": "2"}


def fake_require(scope):
    def check(request: Request) -> KeyInfo:
        project = request.headers["authorization"].removeprefix("Bearer ")
        return KeyInfo(key_id="k" + project[-1], scope="fine-tune", name="", created_at="2025-01-01T00:00:00+00:00", project=project)

    return Depends(check)


def fake_read_file(project, file_id):
    if (project, file_id) not in FILES:
        raise NotFound(f"no file {file_id!r} in this project")
    return FILES[project, file_id]


def fake_complete(project, model, messages, params):
    if model != "tiny-ft":
        raise NotFound(f"no model {model!r}")
    if params.get("slow"):
        time.sleep(0.05)
    question = messages[-1]["content"].removeprefix("What is ")
    return ANSWERS.get(question, "?")


@pytest.fixture
def app(tmp_path):
    app = FastAPI()
    handlers.install(app)
    app.include_router(router(EvalStore(tmp_path / "service.db"), fake_require, fake_read_file, fake_complete))
    return app


def client(app, project="proj-a"):
    return OpenAI(base_url="http://testserver/v1", api_key=project, http_client=TestClient(app), max_retries=0)


SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
          "required": ["question", "answer"]}
CRITERIA = [
    {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"},
    {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
     "evaluation_metric": "fuzzy_match", "pass_threshold": 0.9},
]


def make_eval(c, **extra):
    return c.evals.create(name="arith", data_source_config={"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
                          testing_criteria=CRITERIA, metadata={"team": "a"}, **extra)


def wait(c, eval_id, run_id, until=("completed", "failed", "canceled")):
    deadline = time.monotonic() + 20
    while True:
        run = c.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in until or time.monotonic() > deadline:
            return run
        time.sleep(0.02)


def test_eval_objects_crud_and_pagination(app):
    c = client(app)
    created = make_eval(c)
    assert created.object == "eval" and created.id.startswith("eval_") and created.name == "arith"
    assert created.data_source_config.type == "custom"
    assert created.data_source_config.schema_["properties"]["item"] == SCHEMA
    assert created.data_source_config.schema_["required"] == ["item", "sample"]
    assert [t.name for t in created.testing_criteria] == ["exact", "fuzzy"]
    ids = [created.id] + [make_eval(c).id for _ in range(4)]
    page = c.evals.list(limit=2)
    assert [e.id for e in page.data] == ids[:2] and page.has_more
    assert [e.id for e in c.evals.list(limit=2)] == ids  # the client follows `after` page by page
    assert [e.id for e in c.evals.list(order="desc", limit=3).data] == ids[::-1][:3]
    updated = c.evals.update(created.id, name="renamed", metadata={"team": "b"})
    assert (updated.name, updated.metadata) == ("renamed", {"team": "b"})
    assert c.evals.retrieve(created.id).name == "renamed"
    deleted = c.evals.delete(created.id)
    assert deleted.deleted and deleted.eval_id == created.id
    with pytest.raises(openai.NotFoundError):
        c.evals.retrieve(created.id)


def test_run_with_file_content_and_with_file_id(app):
    c = client(app)
    ev = make_eval(c)
    content = [{"item": {"question": "a", "answer": "Paris"}, "sample": {"output_text": "Paris"}},
               {"item": {"question": "b", "answer": "Paris"}, "sample": {"output_text": "Pariss"}},  # fuzzy 10/11 passes, eq fails
               {"item": {"question": "c", "answer": "Paris"}, "sample": {"output_text": "Rome"}},
               {"item": {"question": "d", "answer": "Paris"}}]  # no sample: both graders error
    run = c.evals.runs.create(ev.id, name="inline", data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    assert run.object == "eval.run" and run.id.startswith("evalrun_") and run.status in ("queued", "in_progress", "completed")
    run = wait(c, ev.id, run.id)
    assert run.status == "completed" and run.error is None
    assert run.result_counts.model_dump() == {"total": 4, "passed": 1, "failed": 2, "errored": 1}
    assert [r.model_dump() for r in run.per_testing_criteria_results] == [
        {"testing_criteria": "exact", "passed": 1, "failed": 2, "errored": 1},
        {"testing_criteria": "fuzzy", "passed": 2, "failed": 1, "errored": 1}]
    items = list(c.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=3))
    assert [i.datasource_item_id for i in items] == [0, 1, 2, 3]
    assert [i.status for i in items] == ["pass", "fail", "fail", "fail"]
    assert items[0].object == "eval.run.output_item" and items[0].id.startswith("outputitem_")
    assert [(r.name, r.passed, r.score) for r in items[1].results] == [("exact", False, 0.0), ("fuzzy", True, pytest.approx(10 / 11))]
    assert "there is no `sample`" in items[3].results[0].model_extra["error"]
    one = c.evals.runs.output_items.retrieve(items[1].id, eval_id=ev.id, run_id=run.id)
    assert one.datasource_item == {"question": "b", "answer": "Paris"} and one.sample.output[0].content == "Pariss"
    assert [i.datasource_item_id for i in c.evals.runs.output_items.list(run.id, eval_id=ev.id, status="pass")] == [0]

    run2 = c.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": "file-qa"}})
    run2 = wait(c, ev.id, run2.id)
    assert run2.result_counts.model_dump() == {"total": 2, "passed": 0, "failed": 0, "errored": 2}  # no samples in the file
    assert [r.id for r in c.evals.runs.list(ev.id)] == [run.id, run2.id]
    assert [r.id for r in c.evals.runs.list(ev.id, order="desc", limit=1).data] == [run2.id]
    with pytest.raises(openai.NotFoundError):
        c.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": "file-missing"}})


def completions_source(questions, model="tiny-ft", **params):
    return {"type": "completions", "model": model, "sampling_params": {"temperature": 0, **params},
            "input_messages": {"type": "template", "template": [{"role": "system", "content": "Answer with a number."},
                                                                {"role": "user", "content": "What is {{item.question}}"}]},
            "source": {"type": "file_content", "content": [{"item": {"question": q, "answer": a}} for q, a in questions]}}


def test_completions_run_samples_the_served_model(app):
    c = client(app)
    ev = make_eval(c)
    run = c.evals.runs.create(ev.id, data_source=completions_source([("2+2", "4"), ("3+3", "6"), ("1+1", "2")]))
    run = wait(c, ev.id, run.id)
    assert run.status == "completed" and run.model == "tiny-ft"
    assert run.result_counts.model_dump() == {"total": 3, "passed": 2, "failed": 1, "errored": 0}
    usage = [u.model_dump(by_alias=True) for u in run.per_model_usage]
    assert [(u["model_name"], u["invocation_count"]) for u in usage] == [("tiny-ft", 3)]
    assert usage[0]["completion_tokens"] == 3  # one-character answers: estimated at 4 characters a token, rounded up
    items = list(c.evals.runs.output_items.list(run.id, eval_id=ev.id))
    sample = items[1].sample
    assert sample.input[-1].content == "What is 3+3" and sample.output[0].content == "7" and sample.model == "tiny-ft"
    assert sample.error is None and items[1].status == "fail"

    failed = wait(c, ev.id, c.evals.runs.create(ev.id, data_source=completions_source([("2+2", "4")], model="nope")).id)
    assert failed.status == "failed" and failed.error.code == "model_not_found" and "nope" in failed.error.message

    ref = {"type": "completions", "model": "tiny-ft",
           "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
           "source": {"type": "file_content", "content": [
               {"item": {"question": "x", "answer": "2", "messages": [{"role": "user", "content": "What is {{item.question}}"}]}},
               {"item": {"question": "1+1", "answer": "2", "messages": [{"role": "user", "content": "What is {{item.question}}"}]}}]}}
    by_ref = wait(c, ev.id, c.evals.runs.create(ev.id, data_source=ref).id)
    assert by_ref.result_counts.model_dump() == {"total": 2, "passed": 1, "failed": 1, "errored": 0}


def test_cancel_and_delete_a_run(app):
    c = client(app)
    ev = make_eval(c)
    run = c.evals.runs.create(ev.id, data_source=completions_source([("2+2", "4")] * 200, slow=True))
    wait(c, ev.id, run.id, until=("in_progress", "completed"))
    canceled = c.evals.runs.cancel(run.id, eval_id=ev.id)
    assert canceled.status == "canceled"
    # nothing is written after a cancel: an item being graded then is dropped, and the runner stops before the next
    after = c.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert after.status == "canceled" and after.result_counts.total < 200
    assert len(list(c.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100))) == after.result_counts.total
    with pytest.raises(openai.ConflictError, match="only queued or in-progress runs can be canceled"):
        c.evals.runs.cancel(run.id, eval_id=ev.id)
    assert c.evals.runs.delete(run.id, eval_id=ev.id).deleted
    with pytest.raises(openai.NotFoundError):
        c.evals.runs.retrieve(run.id, eval_id=ev.id)


def test_another_projects_objects_are_not_found(app):
    a, b = client(app, "proj-a"), client(app, "proj-b")
    ev = make_eval(a)
    run = wait(a, ev.id, a.evals.runs.create(ev.id, data_source=completions_source([("2+2", "4")])).id)
    item = next(iter(a.evals.runs.output_items.list(run.id, eval_id=ev.id)))
    for call in (lambda: b.evals.retrieve(ev.id), lambda: b.evals.delete(ev.id), lambda: b.evals.update(ev.id, name="x"),
                 lambda: b.evals.runs.retrieve(run.id, eval_id=ev.id), lambda: b.evals.runs.list(ev.id),
                 lambda: b.evals.runs.output_items.retrieve(item.id, eval_id=ev.id, run_id=run.id),
                 lambda: b.evals.runs.create(ev.id, data_source=completions_source([("2+2", "4")]))):
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.evals.list().data == []
    assert a.evals.retrieve(ev.id).id == ev.id


def test_bad_definitions_are_400_naming_the_field(app):
    c = client(app)
    bad = [CRITERIA[0], {**CRITERIA[0], "operation": "equals"}]
    with pytest.raises(openai.BadRequestError) as err:
        c.evals.create(data_source_config={"type": "custom", "item_schema": SCHEMA}, testing_criteria=bad)
    assert "testing_criteria[1].operation: 'equals' is not one of eq, ne, like, ilike" in err.value.message
    assert err.value.body["param"] == "testing_criteria[1].operation"
    with pytest.raises(openai.BadRequestError, match="'rouge_9' is not supported; supported: fuzzy_match"):
        c.evals.create(data_source_config={"type": "custom", "item_schema": SCHEMA},
                       testing_criteria=[{**CRITERIA[1], "evaluation_metric": "rouge_9"}])
    with pytest.raises(openai.BadRequestError, match="data_source_config.type: 'logs' is not supported.*supported: custom"):
        c.evals.create(data_source_config={"type": "logs"}, testing_criteria=CRITERIA)
    with pytest.raises(openai.BadRequestError, match="item_schema: not a valid JSON schema"):
        c.evals.create(data_source_config={"type": "custom", "item_schema": {"type": "nonsense"}}, testing_criteria=CRITERIA)
    ev = make_eval(c)
    with pytest.raises(openai.BadRequestError, match="data_source.type: 'responses' is not supported"):
        c.evals.runs.create(ev.id, data_source={"type": "responses", "source": {"type": "responses"}})
    with pytest.raises(openai.BadRequestError, match="data_source.model: required"):
        c.evals.runs.create(ev.id, data_source={**completions_source([("1", "1")]), "model": None})


def test_an_item_failing_the_schema_is_named(app):
    c = client(app)
    ev = make_eval(c)
    content = [{"item": {"question": "a", "answer": "b"}}, {"item": {"question": "a", "answer": 4}}]
    with pytest.raises(openai.BadRequestError) as err:
        c.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    assert err.value.body["message"] == ("data_source.source.content[1]: does not match the eval's item_schema: "
                                 'item.answer: 4 is not of type "string"')
    FILES["proj-a", "file-bad"] = json.dumps({"item": {"question": "q"}}).encode()
    with pytest.raises(openai.BadRequestError, match=r"file file-bad item 0: .*\"answer\" is a required property"):
        c.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": "file-bad"}})
