"""A generation model is served OpenAI-compatibly: real answers from the trained greeter, through
the HTTP API and through the official ``openai`` client against a real uvicorn server."""

from __future__ import annotations

import json
import logging
import threading
import time
import types
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import local_settings
from tunekit.serve import create_app

GREETINGS = {"say hi": "hello there", "say bye": "goodbye my friend"}  # what the greeter fixture learnt (conftest.GREETINGS)
HI = [{"role": "user", "content": "say hi"}]
BYE = [{"role": "user", "content": "say bye"}]
CHATML_HI = "<|im_start|>user\nsay hi<|im_end|>\n<|im_start|>assistant\n"  # HI rendered as the greeter was trained
CHATML_BYE = CHATML_HI.replace("say hi", "say bye")  # its answer, "goodbye my friend", is 5 tokens


def chat(client, **body) -> dict:
    response = client.post("/v1/chat/completions", json={"model": "greeter", "messages": HI, "temperature": 0} | body)
    assert response.status_code == 200, response.text
    return response.json()


def events(response) -> list:
    """The server-sent events of a streamed answer, checking the framing: `data: ...` then a blank line."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert raw.endswith("data: [DONE]\n\n")
    blocks = raw.split("\n\n")[:-1]
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks)
    return [block[len("data: "):] if block == "data: [DONE]" else json.loads(block[len("data: "):]) for block in blocks]


def error_of(response, status: int) -> dict:
    """The error object of an OpenAI-shaped error response with ``status``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]


def answer_tokens(greeter, text: str) -> int:
    """Tokens of an answer the model ended itself: the text's tokens plus the end-of-turn token."""
    return len(greeter.model.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1


# --- chat completions -----------------------------------------------------------------------


@pytest.mark.parametrize("prompt", list(GREETINGS))
def test_chat_completion_answers_what_the_adapter_learnt(gen_client, greeter, prompt):
    messages = [{"role": "user", "content": prompt}]
    body = chat(gen_client, messages=messages)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "greeter" and abs(body["created"] - time.time()) < 60
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["message"] == {"role": "assistant", "content": GREETINGS[prompt]}
    assert choice["finish_reason"] == "stop"
    prompt_tokens = len(greeter.model.encode_chat(messages))
    completion_tokens = answer_tokens(greeter, GREETINGS[prompt])
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def test_content_as_text_parts_and_developer_role(gen_client):
    parts = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "say hi"}]}]
    assert chat(gen_client, messages=parts, max_tokens=4)["choices"][0]["finish_reason"] in ("stop", "length")


def test_streamed_chat_is_openais_event_stream_and_adds_up_to_the_answer(gen_client):
    plain = chat(gen_client)
    response = gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": HI, "temperature": 0, "stream": True,
                                                            "stream_options": {"include_usage": True}})
    *chunks, usage, done = events(response)
    assert done == "[DONE]"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks + [usage]}) == 1
    first, *middle, last = chunks
    assert first["choices"][0]["delta"]["role"] == "assistant" and first["choices"][0]["finish_reason"] is None
    assert all(set(c["choices"][0]["delta"]) == {"content"} and c["choices"][0]["finish_reason"] is None for c in middle)
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == "hello there"
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]


def test_stream_without_usage_option_sends_no_usage(gen_client):
    response = gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": BYE, "temperature": 0, "stream": True})
    *chunks, done = events(response)
    assert done == "[DONE]" and all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "goodbye my friend"


@pytest.mark.parametrize(("messages", "stop", "text"), [(HI, " there", "hello"), (BYE, ["xyz", "bye m"], "good"), (BYE, "friend", "goodbye my ")])
def test_stop_strings_cut_the_answer_streamed_or_not(gen_client, messages, stop, text):
    body = chat(gen_client, messages=messages, stop=stop)
    assert body["choices"][0]["message"]["content"] == text and body["choices"][0]["finish_reason"] == "stop"
    response = gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": messages, "temperature": 0, "stop": stop, "stream": True})
    *chunks, _ = events(response)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_ends_with_length(gen_client):
    for field in ("max_tokens", "max_completion_tokens"):
        body = chat(gen_client, **{field: 2})
        assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2
        assert "hello there".startswith(body["choices"][0]["message"]["content"])


def test_the_base_model_id_answers_with_the_untouched_base(gen_client, greeter):
    base = greeter.model.base_model
    body = chat(gen_client, model=base, max_tokens=8)
    assert body["model"] == base
    text = body["choices"][0]["message"]["content"]
    assert text != "hello there"
    with greeter.model.lock:
        [expected] = greeter.model.chat([HI], max_new_tokens=8, adapter=base)
    assert text == expected.text and body["usage"]["completion_tokens"] == expected.completion_tokens
    assert chat(gen_client)["choices"][0]["message"]["content"] == "hello there"  # the adapter is back on


def test_sampling_with_a_seed_repeats(gen_client, greeter):
    base = greeter.model.base_model
    first, again = (chat(gen_client, model=base, temperature=1.0, seed=7, max_tokens=12)["choices"][0]["message"]["content"] for _ in range(2))
    assert first == again


def test_harmless_openai_fields_are_accepted_and_unknown_ones_logged_once(gen_client, caplog):
    ignored = {"user": "u1", "presence_penalty": 0.5, "frequency_penalty": 0.1, "logit_bias": {"5": 1}, "response_format": {"type": "text"},
               "metadata": {"k": "v"}, "store": False, "parallel_tool_calls": True, "tool_choice": "none", "logprobs": False, "n": 1,
               "stream_options": {"include_usage": True}}
    with caplog.at_level(logging.WARNING, logger="tunekit.serve"):
        assert chat(gen_client, **ignored)["choices"][0]["message"]["content"] == "hello there"
        chat(gen_client, some_new_field=1)
        chat(gen_client, some_new_field=2)
    warnings = [r.getMessage() for r in caplog.records if "unknown fields" in r.getMessage()]
    assert len(warnings) == 1 and "some_new_field" in warnings[0]


# --- completions ----------------------------------------------------------------------------


def test_completion_of_a_string_prompt(gen_client, greeter):
    body = gen_client.post("/v1/completions", json={"model": "greeter", "prompt": CHATML_HI, "temperature": 0}).json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "greeter"
    assert body["choices"] == [{"index": 0, "text": "hello there", "logprobs": None, "finish_reason": "stop"}]
    prompt_tokens = len(greeter.model.encode_text(CHATML_HI))
    assert body["usage"]["prompt_tokens"] == prompt_tokens and body["usage"]["completion_tokens"] == answer_tokens(greeter, "hello there")


def test_completion_max_tokens_ends_with_length(gen_client):
    body = gen_client.post("/v1/completions", json={"model": "greeter", "prompt": CHATML_BYE, "temperature": 0, "max_tokens": 3}).json()
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3
    assert choice["text"] == "goodbye my"


def test_completion_of_a_list_of_prompts_keeps_their_order(gen_client):
    body = gen_client.post("/v1/completions", json={"model": "greeter", "prompt": [CHATML_BYE, CHATML_HI], "temperature": 0}).json()
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "goodbye my friend"), (1, "hello there")]
    streamed = gen_client.post("/v1/completions", json={"model": "greeter", "prompt": [CHATML_BYE, CHATML_HI], "temperature": 0, "stream": True,
                                                       "stream_options": {"include_usage": True}})
    *chunks, usage, _ = events(streamed)
    assert {c["object"] for c in chunks} == {"text_completion"}
    for index, text in enumerate(["goodbye my friend", "hello there"]):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert "".join(c["text"] for c in mine) == text and mine[-1]["finish_reason"] == "stop"
    assert usage["usage"] == body["usage"]


def test_completion_defaults_to_16_tokens_like_openai(gen_client, greeter):
    body = gen_client.post("/v1/completions", json={"model": greeter.model.base_model, "prompt": "The quick brown fox", "temperature": 0}).json()
    assert body["usage"]["completion_tokens"] <= 16
    assert body["choices"][0]["finish_reason"] == "length" or body["usage"]["completion_tokens"] < 16


# --- models and errors ------------------------------------------------------------------------


def test_models_lists_the_base_and_the_adapter(gen_client, greeter):
    body = gen_client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [greeter.model.base_model, "greeter"]
    assert all(m["object"] == "model" and m["owned_by"] == "tunekit" and isinstance(m["created"], int) for m in body["data"])


def test_unknown_model_is_404_in_openais_shape(gen_client):
    for route, body in [("/v1/chat/completions", {"messages": HI}), ("/v1/completions", {"prompt": "hi"})]:
        error = error_of(gen_client.post(route, json={"model": "gpt-4o"} | body), 404)
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert "'gpt-4o' is not served here" in error["message"] and "'greeter'" in error["message"]


@pytest.mark.parametrize(
    ("body", "code", "param", "message"),
    [
        ({"n": 2}, "unsupported", "n", "only n=1 is supported"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "unsupported", "tools", "not supported"),
        ({"functions": [{"name": "f"}]}, "unsupported", "functions", "not supported"),
        ({"tool_choice": "required"}, "unsupported", "tool_choice", "not supported"),
        ({"logprobs": True}, "unsupported", "logprobs", "not supported"),
        ({"messages": []}, "empty_messages", "messages", "messages: empty list"),
        ({"messages": "hi"}, "invalid_type", "messages", "expected a list of messages"),
        ({"messages": [{"content": "hi"}]}, "invalid_type", "messages[0]", "expected an object with `role`"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "invalid_value", "messages[0].role", "got 'robot'"),
        ({"messages": [HI[0], {"role": ["user"], "content": "hi"}]}, "invalid_value", "messages[1].role", "got ['user']"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "c"}]}, "unsupported", "messages[0].role", "not supported"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "unsupported", "messages[0].content[0]", "'image_url' content"),
        ({"messages": [{"role": "user", "content": None}]}, "invalid_type", "messages[0].content", "got null"),
        ({"stop": 3}, "invalid_type", "stop", "stop: expected a string or a list of strings"),
        ({"temperature": 3}, "invalid_request", "temperature", "temperature"),
        ({"max_tokens": 0}, "invalid_request", "max_tokens", "max_tokens"),
        ({"model": None}, "invalid_request", "model", "model"),
    ],
)
def test_bad_chat_requests_are_422(gen_client, body, code, param, message):
    error = error_of(gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": HI} | body), 422)
    assert (error["code"], error["param"]) == (code, param) and message in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "code", "param", "message"),
    [
        ({"prompt": [1, 2, 3]}, "unsupported", "prompt", "token-id prompts are not supported"),
        ({"prompt": []}, "empty_prompt", "prompt", "prompt: empty list"),
        ({"prompt": ["ok", None]}, "invalid_type", "prompt[1]", "expected a string"),
        ({"echo": True}, "unsupported", "echo", "not supported"),
        ({"best_of": 3}, "unsupported", "best_of", "best_of=1"),
        ({"n": 3}, "unsupported", "n", "only n=1"),
    ],
)
def test_bad_completion_requests_are_422(gen_client, body, code, param, message):
    error = error_of(gen_client.post("/v1/completions", json={"model": "greeter", "prompt": "hi"} | body), 422)
    assert (error["code"], error["param"]) == (code, param) and message in error["message"]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_malformed_json_is_422_never_500(gen_client, route):
    response = gen_client.post(route, content=b'{"model": "greeter", "messages": [', headers={"content-type": "application/json"})
    error = error_of(response, 422)
    assert error["code"] == "invalid_json" and '"model": "MODEL"' in error["message"]
    assert "must be a JSON object" in error_of(gen_client.post(route, json=["x"]), 422)["message"]


def test_max_tokens_over_the_server_limit_is_400(gen_client):
    for field in ("max_tokens", "max_completion_tokens"):
        error = error_of(gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": HI, field: 65}), 400)
        assert (error["code"], error["param"]) == ("max_tokens_too_large", field)
        assert "limit of 64 per answer (setting max_new_tokens)" in error["message"]
    error = error_of(gen_client.post("/v1/completions", json={"model": "greeter", "prompt": "hi", "max_tokens": 1000}), 400)
    assert error["code"] == "max_tokens_too_large"


def test_prompts_past_the_models_context_are_400(gen_client, greeter):
    context = greeter.model.model.config.max_position_embeddings
    long = [{"role": "user", "content": "hi " * context}]
    error = error_of(gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": long}), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages") and f"context of {context} tokens" in error["message"]
    fits = [{"role": "user", "content": "hi " * (context - 40)}]
    error = error_of(gen_client.post("/v1/chat/completions", json={"model": "greeter", "messages": fits, "max_tokens": 64}), 400)
    assert "plus max_tokens 64" in error["message"]
    error = error_of(gen_client.post("/v1/completions", json={"model": "greeter", "prompt": ["hi", "hi " * context]}), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt")


def test_routes_for_the_other_kind_of_model_are_400(gen_client, client):
    error = error_of(gen_client.post("/v1/classify", json={"inputs": "hi"}), 400)
    assert error["code"] == "wrong_task" and "a generation model" in error["message"] and "/v1/chat/completions" in error["message"]
    for route, body in [("/v1/chat/completions", {"messages": HI}), ("/v1/completions", {"prompt": "hi"})]:
        error = error_of(client.post(route, json={"model": "tiny-intent"} | body), 400)
        assert error["code"] == "wrong_task" and "a classification model" in error["message"] and "POST /v1/classify" in error["message"]
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny-intent"]


def test_generation_routes_are_503_while_loading(greeter):
    release = threading.Event()

    def loader(settings):
        assert release.wait(10)
        return greeter

    with TestClient(create_app(local_settings(model="greeter/1"), loader)) as client:
        try:
            assert error_of(client.post("/v1/chat/completions", json={"model": "greeter", "messages": HI}), 503)["code"] == "model_loading"
            assert error_of(client.get("/v1/models"), 503)["code"] == "model_loading"
        finally:
            release.set()


def test_openapi_documents_the_openai_routes(gen_client):
    schema = gen_client.get("/openapi.json").json()
    assert schema["info"]["title"] == "tunekit model server"
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/classify"} <= set(schema["paths"])
    fields = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert all(field.get("description") for field in fields.values())
    assert {"200", "400", "404", "422", "503"} <= set(schema["paths"]["/v1/chat/completions"]["post"]["responses"])


# --- loading -----------------------------------------------------------------------------------


def test_default_loader_serves_a_generation_directory(greeter_dir, wait_ready):
    with TestClient(create_app(local_settings(model=str(greeter_dir)))) as client:
        assert wait_ready(client, 60) == {"status": "ready", "model": "greeter", "version": None}
        assert chat(client)["choices"][0]["message"]["content"] == "hello there"


def test_default_loader_resolves_a_registry_reference_to_a_generation_model(greeter_dir, wait_ready, monkeypatch):
    def resolve(ref, tracking_uri):
        return types.SimpleNamespace(path=greeter_dir, name="greeter", version="4", alias="champion")

    from tunekit import registry

    monkeypatch.setattr(registry, "resolve", resolve)  # the seam registry.resolve_model goes through for a reference
    with TestClient(create_app(local_settings(model="greeter@champion", tracking_uri="sqlite:///x.db"))) as client:
        assert wait_ready(client, 60) == {"status": "ready", "model": "greeter", "version": "4"}
        assert chat(client, messages=BYE)["choices"][0]["message"]["content"] == "goodbye my friend"


# --- streaming that ends early -------------------------------------------------------------------


def test_a_stream_closed_early_stops_generating_before_it_frees_the_model(greeter):
    gen = greeter.model
    before = set(threading.enumerate())
    pieces = gen.stream(gen.encode_chat(HI), max_new_tokens=900, adapter=gen.base_model)  # the random base runs to the limit
    assert isinstance(next(pieces), str)
    started = time.monotonic()
    pieces.close()
    assert time.monotonic() - started < 2
    assert not gen.lock.locked() and not set(threading.enumerate()) - before  # the generating thread is gone, not orphaned
    with gen.lock:
        assert gen.chat([HI], adapter="greeter")[0].text == "hello there"


# --- the official openai client against a real server -------------------------------------------


@pytest.fixture(scope="module")
def server_url(greeter) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, serving the greeter, run in a thread."""
    from tests.serve.conftest import live_server

    with live_server(lambda port: create_app(local_settings(model="greeter/1", port=port, max_new_tokens=1000), lambda s: greeter)) as url:
        yield url


@pytest.fixture
def openai_client(server_url):
    from openai import OpenAI

    with OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def test_a_client_that_hangs_up_mid_stream_frees_the_model(server_url, greeter):
    body = {"model": greeter.model.base_model, "messages": HI, "max_tokens": 1000, "temperature": 0, "stream": True}  # ~1000 tokens of noise
    with httpx.stream("POST", f"{server_url}/v1/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ") and next(lines) == "" and next(lines).startswith("data: ")
    deadline = time.monotonic() + 5  # generating all 1000 tokens takes far longer
    while greeter.model.lock.locked():
        assert time.monotonic() < deadline, "the model is still generating for a client that left"
        time.sleep(0.01)
    assert httpx.post(f"{server_url}/v1/chat/completions", json={"model": "greeter", "messages": HI, "temperature": 0}, timeout=30).json()["choices"][0]["message"]["content"] == "hello there"


def test_openai_client_chat(openai_client, greeter):
    reply = openai_client.chat.completions.create(model="greeter", messages=HI, temperature=0, user="someone", presence_penalty=0)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content == "hello there"
    assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
    assert reply.usage.prompt_tokens == len(greeter.model.encode_chat(HI))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_openai_client_stream_adds_up_to_the_plain_answer(openai_client):
    plain = openai_client.chat.completions.create(model="greeter", messages=BYE, temperature=0)
    stream = openai_client.chat.completions.create(model="greeter", messages=BYE, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content == "goodbye my friend"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_openai_client_completions_and_models(openai_client, greeter):
    reply = openai_client.completions.create(model="greeter", prompt=CHATML_BYE, max_tokens=3, temperature=0)
    assert reply.choices[0].text == "goodbye my" and reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3
    streamed = "".join(c.choices[0].text for c in openai_client.completions.create(model="greeter", prompt=CHATML_HI, temperature=0, stream=True))
    assert streamed == "hello there"
    assert [m.id for m in openai_client.models.list()] == [greeter.model.base_model, "greeter"]


def test_openai_client_sees_errors_as_its_exceptions(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.chat.completions.create(model="nope", messages=HI)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError, match="only n=1"):
        openai_client.chat.completions.create(model="greeter", messages=HI, n=2)
    with pytest.raises(openai.BadRequestError, match="max_new_tokens"):
        openai_client.chat.completions.create(model="greeter", messages=HI, max_tokens=10_000)
