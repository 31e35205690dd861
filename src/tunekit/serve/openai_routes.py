"""OpenAI-compatible routes for generation models: chat completions, completions, the model list.

``POST /v1/chat/completions`` renders ``messages`` with the chat template the model was trained
with (``Generator.encode_chat``, the function evaluation uses) and generates one assistant turn;
``POST /v1/completions`` continues raw text. Both answer in OpenAI's shapes, or with ``stream:
true`` as server-sent events (``data: {chunk}`` per piece, then ``data: [DONE]``), so the official
``openai`` client and tools built on it work unchanged. ``GET /v1/models`` lists what a request's
``model`` may name: for a PEFT model the base model id (the untouched base) and each adapter name,
for a full checkpoint the model's name.

Generation runs in each model's decoding scheduler (``tunekit.models.decoding``), off the event
loop: concurrent requests, streamed or not, share every decoding step; a stream whose client hangs
up, or a request that times out, is dropped at the next step.

Status codes, all with OpenAI's error body:
- 400: a well-formed request this model cannot fit: ``max_tokens`` above the server's
  ``max_new_tokens`` (``max_tokens_too_large``), a prompt (plus ``max_tokens``) past the model's
  context, ``max_position_embeddings`` (``context_length_exceeded``), or a generation route on a
  classification model (``wrong_task``; ``/v1/classify`` on a generation model is 400 likewise).
- 404: ``model`` names nothing this server serves (``model_not_found``).
- 422: a malformed request (not JSON, wrong types, empty ``messages``), or one asking for what this
  server does not do: ``n`` > 1, ``tools``, ``logprobs``, ... (``unsupported``).
- 503: the model is still loading or failed to load.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Protocol

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunekit import task_kinds
from tunekit.errors import DataError, TunekitError
from tunekit.models.causal import Generation, Generator
from tunekit.serve.deployment import CHALLENGER_ADAPTER, GenerationCall
from tunekit.serve.handlers import error_body
from tunekit.serve.inputs import RequestError, check_strings, describe_value, type_name
from tunekit.serve.loading import LoadedModel, ModelSlot
from tunekit.serve.openai_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    Usage,
)
from tunekit.serve.runtime import Record, Runtime, record
from tunekit.serve.schemas import ErrorResponse
from tunekit.serve.settings import ServeSettings

logger = logging.getLogger("tunekit.serve")

ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 404, 422, 503)}
STREAMED = {200: {"content": {"text/event-stream": {}}, "description": "The answer; with `stream: true`, server-sent events."}}
COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the server's max_new_tokens
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
NO_TOOLS = "not supported: this server does no tool or function calling"
NO_LOGPROBS = "not supported: this server returns no log probabilities"
ONE_ANSWER = "only n=1 is supported (one answer per request); send the request again, with another `seed`, for another answer"

# field -> (is the value refused?, why); the ignored fields are simply not listed
Refusals = dict[str, tuple[Callable[[Any], bool], str]]
CHAT_REFUSED: Refusals = {
    "n": (lambda v: v not in (None, 1), ONE_ANSWER),
    "tools": (bool, NO_TOOLS),
    "functions": (bool, NO_TOOLS),
    "tool_choice": (lambda v: v not in (None, "none", "auto"), NO_TOOLS),
    "function_call": (lambda v: v not in (None, "none", "auto"), NO_TOOLS),
    "logprobs": (bool, NO_LOGPROBS),
    "top_logprobs": (bool, NO_LOGPROBS),
    "audio": (lambda v: v is not None, "not supported: this server answers with text only"),
}
COMPLETION_REFUSED: Refusals = {
    "n": (lambda v: v not in (None, 1), ONE_ANSWER),
    "best_of": (lambda v: v not in (None, 1), "only best_of=1 is supported"),
    "echo": (bool, "not supported: the answer never repeats the prompt"),
    "logprobs": (bool, NO_LOGPROBS),
    "suffix": (bool, "not supported: there is no insertion mode"),
}


class Served(Protocol):
    """What the routes serve: one model (``SingleModel``, ``tunekit serve --model``) or every fine-tuned
    model of the caller's project (service mode's pool)."""

    def pick(self, model: str, http: Request) -> LoadedModel:
        """The loaded model that answers for ``model`` (404 when nothing does, 503 while loading)."""

    def cards(self, http: Request) -> list[ModelCard]:
        """What ``GET /v1/models`` lists for this caller."""


class SingleModel:
    """The one model of ``tunekit serve --model``: its name, or a PEFT model's base id and adapter names;
    ``deployment`` (``serve.deployment``) runs a shadow or canary challenger beside it."""

    def __init__(self, slot: ModelSlot, deployment=None):
        self.slot, self.deployment = slot, deployment

    def pick(self, model: str, http: Request) -> LoadedModel:
        return self.slot.require()

    def cards(self, http: Request) -> list[ModelCard]:
        loaded = self.slot.require()
        return [ModelCard(id=name, created=loaded.created) for name in served_models(loaded)]


def install(app: FastAPI, served: Served, settings: ServeSettings, runtime: Runtime, dependencies: list) -> None:
    """Add ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` to ``app``;
    ``dependencies`` (auth and rate limit) guard each of them."""
    router = APIRouter(tags=["OpenAI-compatible"], dependencies=dependencies)
    warned: set[str] = set()  # unknown request fields already reported in the log

    @router.get("/v1/models", response_model=ModelList, responses={503: {"model": ErrorResponse}}, summary="The models a request's `model` may name")
    async def models(http: Request) -> ModelList:
        return ModelList(data=await run_in_threadpool(served.cards, http))

    @router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERRORS | STREAMED, summary="Answer a conversation (OpenAI chat completions)")
    async def chat_completions(request: ChatCompletionRequest, http: Request):
        loaded = await run_in_threadpool(served.pick, request.model, http)  # the pool may load it: off the event loop
        gen, adapter = _target(loaded, request.model, http.url.path)
        runtime.watch(gen)
        _check(request, CHAT_REFUSED, http.url.path, warned)
        messages = conversation(request.messages)
        head = _head("chatcmpl", request.model)
        rec = _record(http, loaded, adapter, head, {"messages": messages, "context": request.context})
        # every turn a client sends: a system or assistant turn can carry an injection as well as a user turn
        await runtime.check_input(http, [m["content"] for m in messages])
        prompt = await run_in_threadpool(_encode_chat, gen, messages)
        _input_limit([prompt], settings.max_input_tokens, "messages")
        requested, param = (request.max_completion_tokens, "max_completion_tokens") if request.max_completion_tokens else (request.max_tokens, "max_tokens")
        budget = _max_tokens(gen, [prompt], requested, param, "messages", settings.max_new_tokens, settings.max_new_tokens)
        call = _deployed(served, http, rec, loaded, adapter, _options(request, gen, adapter, budget))  # champion, canary or shadowed
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            rec.deferred = True
            chunks = _logged(_chat_chunks(call.generator, prompt, call.options, head, usage), runtime, rec, http, request.context, loaded.name)
            return _EventStream(call.stream(chunks, runtime, rec, http.url.path, [prompt], request.context))
        [answer] = await call.generate(runtime, [prompt])
        text = await runtime.check_output(http, answer.text, request.context)
        _finish(runtime, rec, loaded.name, [answer], [text])
        call.done(runtime, rec, http.url.path, [prompt], request.context)
        choice = ChatChoice(index=0, message=AssistantMessage(content=text), finish_reason=answer.finish_reason)
        return ChatCompletion(**head, choices=[choice], usage=_usage([answer]), flags=[f.to_json() for f in rec.flags])

    @router.post("/v1/completions", response_model=Completion, responses=ERRORS | STREAMED, summary="Continue raw text (OpenAI completions)")
    async def completions(request: CompletionRequest, http: Request):
        loaded = await run_in_threadpool(served.pick, request.model, http)  # the pool may load it: off the event loop
        gen, adapter = _target(loaded, request.model, http.url.path)
        runtime.watch(gen)
        _check(request, COMPLETION_REFUSED, http.url.path, warned)
        texts = prompt_texts(request.prompt, settings.max_inputs)
        head = _head("cmpl", request.model)
        rec = _record(http, loaded, adapter, head, {"prompt": texts, "context": request.context})
        await runtime.check_input(http, texts)
        prompts = await run_in_threadpool(lambda: [gen.encode_text(text) for text in texts])
        _input_limit(prompts, settings.max_input_tokens, "prompt")
        budget = _max_tokens(gen, prompts, request.max_tokens, "max_tokens", "prompt", settings.max_new_tokens, COMPLETIONS_MAX_TOKENS)
        call = _deployed(served, http, rec, loaded, adapter, _options(request, gen, adapter, budget))  # champion, canary or shadowed
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            rec.deferred = True
            chunks = _logged(_completion_chunks(call.generator, prompts, call.options, head, usage), runtime, rec, http, request.context, loaded.name)
            return _EventStream(call.stream(chunks, runtime, rec, http.url.path, prompts, request.context))
        answers = await call.generate(runtime, prompts)
        outputs = [await runtime.check_output(http, a.text, request.context) for a in answers]
        _finish(runtime, rec, loaded.name, answers, outputs)
        call.done(runtime, rec, http.url.path, prompts, request.context)
        choices = [CompletionChoice(index=i, text=t, finish_reason=a.finish_reason) for i, (a, t) in enumerate(zip(answers, outputs))]
        return Completion(**head, choices=choices, usage=_usage(answers), flags=[f.to_json() for f in rec.flags])

    app.include_router(router)


def served_models(loaded: LoadedModel) -> list[str]:
    """What a request's ``model`` may name: a PEFT model's base id and adapter names, else the model's name."""
    if task_kinds.kind(loaded.task).causal and loaded.model.adapters:  # a deployment's challenger adapter is not for clients to name
        return [loaded.model.base_model, *(a for a in loaded.model.adapters if not a.startswith(CHALLENGER_ADAPTER))]
    return [loaded.name]


def _target(loaded: LoadedModel, requested: str, route: str) -> tuple[Generator, str | None]:
    """The generator and the adapter to use (the base id for the bare base; None for a full checkpoint)."""
    if not task_kinds.kind(loaded.task).causal:
        raise RequestError(
            f"{route}: this server serves {loaded.name!r}, a {loaded.task} model; send its requests to POST "
            f"{'/v1/predict' if task_kinds.kind(loaded.task).numeric else '/v1/classify'}. "
            "Chat and text completions need a model trained with `task: generation`.", "wrong_task", None, 400,
        )
    names = served_models(loaded)
    if requested not in names:
        raise RequestError(f"model: {requested!r} is not served here; use one of: {', '.join(repr(n) for n in names)} (GET /v1/models lists them)",
                           "model_not_found", "model", 404)
    return loaded.model, (requested if loaded.model.adapters else None)


def _deployed(served: Served, http: Request, rec: Record, loaded: LoadedModel, adapter: str | None, options: dict) -> GenerationCall:
    """Which arm answers (``serve.deployment``): the champion's ``options``, or a canary's; a plain call without a deployment."""
    deployment = getattr(served, "deployment", None)
    if deployment is None:
        return GenerationCall(None, None, options, loaded)
    return deployment.generation(http, rec, loaded, adapter, options)


def _check(request: ChatCompletionRequest | CompletionRequest, refused: Refusals, route: str, warned: set[str]) -> None:
    """Refuse what this server cannot do (422) and text that is not valid Unicode (422); log, once per
    field, fields it does not know and ignores."""
    for name in ("model", "stop", "context", "messages", "prompt"):
        check_strings(getattr(request, name, None), name)
    for name, (is_refused, why) in refused.items():
        if is_refused(getattr(request, name)):
            raise RequestError(f"{name}: {why}", "unsupported", name)
    unknown = sorted(set(request.model_extra or {}) - warned)
    if unknown:
        warned.update(unknown)
        logger.warning("POST %s: ignoring unknown fields %s (reported once per field)", route, ", ".join(unknown))


def conversation(raw: Any) -> list[dict]:
    """``messages`` as ``{role, content}`` dicts with text content; every problem is a 422 naming the item."""
    if not isinstance(raw, list):
        raise RequestError(f'messages: expected a list of messages such as [{{"role": "user", "content": "hi"}}], got {type_name(raw)}', "invalid_type", "messages")
    if not raw:
        raise RequestError('messages: empty list; send at least one message, such as {"role": "user", "content": "hi"}', "empty_messages", "messages")
    messages = [_message(item, f"messages[{i}]") for i, item in enumerate(raw)]
    first = next((i for i, m in enumerate(messages) if m["role"] != "system"), None)
    if first is None or messages[first]["role"] != "user":
        where = f"messages[{first}]" if first is not None else "messages"
        what = "starts with an assistant turn" if first is not None else "has no user turn"
        raise RequestError(f'{where}: the conversation {what}; after any system messages it must start with a user message, such as '
                           '{"role": "user", "content": "hi"}', "invalid_conversation", where)
    return messages


def _message(item: Any, where: str) -> dict:
    if not isinstance(item, dict) or "role" not in item:
        raise RequestError(f"{where}: expected an object with `role` and `content`, got {describe_value(item)}", "invalid_type", where)
    role = item["role"]
    if role in ("tool", "function"):
        raise RequestError(f"{where}.role: {role!r} messages are {NO_TOOLS}", "unsupported", f"{where}.role")
    if not isinstance(role, str) or role not in ROLES:
        raise RequestError(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}", "invalid_value", f"{where}.role")
    if item.get("tool_calls") or item.get("function_call"):
        raise RequestError(f"{where}.tool_calls: {NO_TOOLS}", "unsupported", f"{where}.tool_calls")
    return {"role": ROLES[role], "content": _content(item.get("content"), f"{where}.content")}


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RequestError(f"{where}: expected a string or a list of text parts, got {type_name(value)}", "invalid_type", where)
    texts = []
    for i, part in enumerate(value):
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict) and part.get("type") not in (None, "text"):
            raise RequestError(f"{where}[{i}]: {part['type']!r} content is not supported; this server reads text parts only", "unsupported", f"{where}[{i}]")
        else:
            raise RequestError(f'{where}[{i}]: expected a text part {{"type": "text", "text": ...}}, got {describe_value(part)}', "invalid_type", f"{where}[{i}]")
    return "\n".join(texts)


def prompt_texts(raw: Any, max_prompts: int) -> list[str]:
    """``prompt`` as a list of texts; token-id prompts and other shapes are a 422, more than
    ``max_prompts`` texts a 413 (the classify routes' ``max_inputs``)."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise RequestError(f"prompt: expected a string or a list of strings, got {type_name(raw)}", "invalid_type", "prompt")
    if not raw:
        raise RequestError("prompt: empty list; send a text or a list of texts", "empty_prompt", "prompt")
    if len(raw) > max_prompts:
        raise RequestError(f"prompt: {len(raw)} prompts, more than the limit of {max_prompts} per request (setting max_inputs, "
                           "--max-inputs); split the request or restart the server with a higher --max-inputs", "too_many_inputs",
                           "prompt", 413)
    for i, item in enumerate(raw):
        if isinstance(item, int | list):
            raise RequestError("prompt: token-id prompts are not supported; send the prompt as text", "unsupported", "prompt")
        if not isinstance(item, str):
            raise RequestError(f"prompt[{i}]: expected a string, got {type_name(item)}", "invalid_type", f"prompt[{i}]")
    return raw


def _stop(raw: Any) -> list[str] | None:
    """``stop`` as a list of non-empty strings, or None."""
    items = [raw] if isinstance(raw, str) else raw
    if items is None:
        return None
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise RequestError(f"stop: expected a string or a list of strings, got {describe_value(raw)}", "invalid_type", "stop")
    return [s for s in items if s] or None


def _encode_chat(gen: Generator, messages: list[dict]) -> list[int]:
    from jinja2 import TemplateError

    try:
        return gen.encode_chat(messages)
    except (DataError, TemplateError) as exc:
        raise RequestError(f"messages: the model's chat template ({gen.template.name}) cannot render this conversation: {exc}", "invalid_conversation", "messages") from None


def _max_tokens(gen: Generator, prompts: list[list[int]], requested: int | None, param: str, prompt_param: str, limit: int, default: int) -> int:
    """Tokens to generate per prompt; 400 when more than ``limit`` are asked for or the prompt does not fit the context."""
    if requested is not None and requested > limit:
        raise RequestError(
            f"{param}: {requested} tokens, more than this server's limit of {limit} per answer (setting max_new_tokens); "
            "ask for fewer, or restart the server with a higher max_new_tokens", "max_tokens_too_large", param, 400,
        )
    context = getattr(gen.model.config, "max_position_embeddings", None)
    longest = max(len(p) for p in prompts)
    if context is not None and longest + (requested or 1) > context:
        asked = f" plus {param} {requested}" if requested is not None else ""
        raise RequestError(
            f"{prompt_param}: {longest} prompt tokens{asked} do not fit this model's context of {context} tokens (max_position_embeddings); "
            f"shorten the prompt{' or ask for fewer tokens' if requested is not None else ''}", "context_length_exceeded", prompt_param, 400,
        )
    if requested is not None:
        return requested
    return min(default, context - longest) if context is not None else default


def _options(request: ChatCompletionRequest | CompletionRequest, gen: Generator, adapter: str | None, max_new_tokens: int) -> dict:
    """Keyword arguments of ``Generator.generate``/``stream``, with OpenAI's defaults (temperature 1, top_p 1),
    and the ``generator`` itself (the micro-batcher groups requests by model and options)."""
    temperature = 1.0 if request.temperature is None else request.temperature
    top_p = 1.0 if request.top_p is None else request.top_p
    return {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "stop": _stop(request.stop),
            "adapter": adapter, "seed": request.seed, "generator": gen}


def _input_limit(prompts: list[list[int]], limit: int, param: str) -> None:
    longest = max(len(p) for p in prompts)
    if longest > limit:
        raise RequestError(f"{param}: {longest} prompt tokens, more than this server's limit of {limit} (setting max_input_tokens); "
                           "shorten the prompt", "context_length_exceeded", param, 400)


def _record(http: Request, loaded: LoadedModel, adapter: str | None, head: dict, request: dict) -> Record:
    """The request's log record, under the answer's id (so feedback can name it); the log redacts it, off the event loop."""
    rec = record(http)
    rec.id, rec.model, rec.version, rec.adapter = head["id"], loaded.name, loaded.version, adapter
    rec.request = {k: v for k, v in request.items() if v is not None}
    return rec


def _finish(runtime: Runtime, rec: Record, model: str, answers: list[Generation], texts: list[str], ttft: float | None = None) -> None:
    rec.prompt_tokens = sum(a.prompt_tokens for a in answers)
    rec.completion_tokens = sum(a.completion_tokens for a in answers)
    rec.response = [{"text": t, "finish_reason": a.finish_reason} for a, t in zip(answers, texts)]
    runtime.metrics.observe_generation(model, rec.prompt_tokens, rec.completion_tokens, ttft)


async def _logged(chunks: AsyncIterator[dict], runtime: Runtime, rec: Record, http: Request, context: str | None,
                  model: str) -> AsyncIterator[dict]:
    """A stream that measures time to first token and writes its own log record when it ends.

    Output guardrails can only flag here: the text has left by the time it is checked. Requests
    whose answers must be blocked or redacted should not stream.
    """
    started = time.perf_counter()
    ttft, texts, answers, status = None, {}, [], 200
    try:
        async for chunk in chunks:
            for choice in chunk.get("choices", []):
                piece = choice.get("text") or (choice.get("delta") or {}).get("content")
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    texts[choice["index"]] = texts.get(choice["index"], "") + piece
            if chunk.get("usage"):
                answers.append(chunk["usage"])
            yield chunk
    except BaseException:
        status = 499  # the client went away (or the stream failed) before the end
        raise
    finally:
        outputs = [texts.get(i, "") for i in range(max(texts, default=-1) + 1)]
        with anyio.CancelScope(shield=True):  # also when the client hung up: check and log what was sent
            checked = [await run_in_threadpool(runtime.guardrails.check_output, t, context) for t in outputs]
        flags = [f for _, fs in checked for f in fs]
        rec.flags.extend(flags)
        for flag in flags:
            runtime.metrics.guardrail_flag(flag.kind, flag.where, "flag")
        rec.response = [{"text": t} for t in outputs]
        runtime.metrics.observe_generation(model, 0, 0, ttft)
        await runtime.write(rec, http.url.path, status, (time.perf_counter() - started) * 1000)


def _head(prefix: str, model: str) -> dict:
    """The fields every answer and chunk of one request share (``object`` aside)."""
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}


def _usage(answers: list[Generation]) -> Usage:
    prompt, completion = sum(a.prompt_tokens for a in answers), sum(a.completion_tokens for a in answers)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


# --- streaming -------------------------------------------------------------------------------


class _EventStream(StreamingResponse):
    """Server-sent events as OpenAI sends them: ``data: {json}`` per chunk, then ``data: [DONE]``.

    Unlike Starlette's ``StreamingResponse``, it closes its iterator when the response ends, also
    when the client hung up midway. Left to garbage collection, the chain of generators below would
    be finalised in no particular order, and the model would keep generating for nobody meanwhile.
    """

    def __init__(self, chunks: AsyncIterator[dict]):
        super().__init__(_events(chunks), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


async def _events(chunks: AsyncIterator[dict]) -> AsyncIterator[str]:
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
    except Exception as exc:  # the 200 is already sent: the error can only be an event
        logger.exception("stream failed midway", exc_info=exc)
        status = exc.http_status if isinstance(exc, TunekitError) else 500
        yield f"data: {json.dumps(error_body(status, f'generation failed: {exc}', 'stream_failed'))}\n\n"
    yield "data: [DONE]\n\n"


async def _pieces(gen: Generator, prompt: list[int], options: dict) -> AsyncIterator[str | Generation]:
    """``Generator.stream`` advanced in worker threads; closing this closes it, which stops generation."""
    items = gen.stream(prompt, **{k: v for k, v in options.items() if k != "generator"})
    try:
        while (item := await run_in_threadpool(next, items, None)) is not None:
            yield item
    finally:
        with anyio.CancelScope(shield=True):  # also when cancelled: free the model now
            await run_in_threadpool(items.close)


async def _chat_chunks(gen: Generator, prompt: list[int], options: dict, head: dict, include_usage: bool) -> AsyncIterator[dict]:
    head = {"id": head["id"], "object": "chat.completion.chunk", **head}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}

    yield chunk({"role": "assistant", "content": ""})
    final = None
    async with aclosing(_pieces(gen, prompt, options)) as items:
        async for item in items:
            if isinstance(item, Generation):
                final = item
            else:
                yield chunk({"content": item})
    yield chunk({}, final.finish_reason)
    if include_usage:
        yield {**head, "choices": [], "usage": _usage([final]).model_dump()}


async def _completion_chunks(gen: Generator, prompts: list[list[int]], options: dict, head: dict, include_usage: bool) -> AsyncIterator[dict]:
    head = {"id": head["id"], "object": "text_completion", **head}
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, text: str, finish_reason: str | None = None) -> dict:
        return {**head, "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}], **extra}

    finals = []
    for index, prompt in enumerate(prompts):  # one prompt after the other, each choice ending with its finish_reason
        async with aclosing(_pieces(gen, prompt, options)) as items:
            async for item in items:
                if isinstance(item, Generation):
                    finals.append(item)
                else:
                    yield chunk(index, item)
        yield chunk(index, "", finals[-1].finish_reason)
    if include_usage:
        yield {**head, "choices": [], "usage": _usage(finals).model_dump()}
