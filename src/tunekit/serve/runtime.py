"""What a production request passes through besides the model: auth, rate limit, timeout,
guardrails, micro-batching (generation: the model's decoding scheduler), metrics and the request log, held by one ``Runtime`` per app.

The routes stay about their API: each declares the scope it needs (``runtime.require("inference")``),
sends rows through ``runtime.classify`` / ``runtime.generate`` (micro-batched, with the timeout),
and notes what it did on the request's ``Record``; the ``observe`` middleware writes every record
(failures included) to ``serving.db`` and the Prometheus metrics when the response leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tunekit.artifacts import Workspace
from tunekit.errors import RequestTimeout, TunekitError
from tunekit.serve.batcher import MicroBatcher
from tunekit.serve.guardrails import Flag, Guardrails, blocked_error
from tunekit.serve.keys import (
    AuthError,
    KeyInfo,
    KeyStore,
    authenticate,
    startup_message,
)
from tunekit.serve.metrics import ServerMetrics
from tunekit.serve.ratelimit import RateLimited, RateLimiter
from tunekit.serve.requestlog import RequestLog
from tunekit.serve.settings import ServeSettings

logger = logging.getLogger("tunekit.serve")

LOGGED_PREFIX = "/v1/"  # model and feedback routes are logged; probes and /metrics only counted
INLINE_GUARDRAIL_CHARS = 2000  # input guardrails over at most this many characters run on the event loop (well under a millisecond)


@dataclass
class Record:
    """What one request did, filled in by its route; written to the request log when it ends."""

    id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex}")
    model: str | None = None
    version: str | None = None
    adapter: str | None = None
    key_id: str | None = None
    request: Any = None
    response: Any = None
    flags: list[Flag] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    deferred: bool = False  # a stream writes its own record when it ends


class Runtime:
    """Per-app services; ``start``/``stop`` run in the app's lifespan."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.keys = KeyStore(Workspace(settings.workspace_dir).keys_db) if settings.auth else None
        if self.keys is not None:
            self.keys.check()  # a corrupt keys.db stops the start with a message naming it, not a traceback
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        # failed authentications per client address: past this many a minute, 429 before any key is checked
        self.auth_failures = RateLimiter(settings.auth_failures_per_minute)
        self.guardrails = Guardrails(settings.guardrails)
        self.metrics = ServerMetrics()
        self.log = (RequestLog(Workspace(settings.workspace_dir).serving_db, durable=settings.durable_log, redact=settings.guardrails.redact_logs)
                    if settings.log_requests else None)
        self.batchers: dict[str, MicroBatcher] = {}

    def start(self, classify_fn) -> None:
        """Create the classifier's micro-batcher (it needs the running event loop) and say how auth stands.
        Generation needs none: each model's decoding scheduler batches its requests step by step."""
        s = self.settings
        for kind, fn in (("classify", classify_fn),):
            batcher = MicroBatcher(fn, s.batch_size, s.max_wait_ms, kind, on_batch=lambda n, k=kind: self.metrics.observe_batch(k, n),
                                   concurrency=s.forward_concurrency)
            batcher.start()
            self.metrics.watch_queue_depth(kind, lambda b=batcher: b.queue_depth)
            self.batchers[kind] = batcher
        message = startup_message(self.keys)
        (logger.warning if self.keys is None else logger.info)(message)
        print(f"tunekit: {message}", flush=True)

    async def stop(self) -> None:
        """Finish queued work, then commit every logged request: nothing acknowledged is lost."""
        for batcher in self.batchers.values():
            await batcher.stop()
        if self.log is not None:
            await asyncio.to_thread(self.log.close)

    def require(self, scope: str):
        """A route dependency: a valid key with ``scope`` (401/403), then the key's rate limit (429)."""

        async def check(request: Request) -> KeyInfo | None:
            client = request.client.host if request.client else "local"
            if self.keys is not None:
                self._throttle_failures(client)
            try:
                info = authenticate(self.keys, request.headers.get("authorization"), scope, request.headers.get("x-api-key"))
            except AuthError:
                self.auth_failures.check(client)  # takes one of the client's failure tokens
                raise
            record(request).key_id = info.key_id if info else None
            request.state.key = info  # service mode scopes files, jobs and models to the key's project
            self.limiter.enforce(info.key_id if info else client)
            return info

        return Depends(check)

    def _throttle_failures(self, client: str) -> None:
        """429 while ``client`` has used up its failed authentications (the key is not even checked)."""
        wait = self.auth_failures.wait(client)
        if wait is not None:
            retry_after = max(1, int(wait) + 1)
            raise RateLimited(f"too many failed authentications from {client}: more than {self.settings.auth_failures_per_minute:g} a minute "
                              f"(setting auth_failures_per_minute); check the API key and retry in {retry_after} s", retry_after)

    async def within_timeout(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.settings.request_timeout_s)
        except TimeoutError:
            raise RequestTimeout(self.settings.request_timeout_s) from None

    async def classify(self, rows: list[tuple[str, str | None]]) -> list:
        return await self.within_timeout(self.batchers["classify"].submit_many(rows))

    def watch(self, gen) -> None:
        """Publish a generator's decoding steps (rows per step) and waiting requests in this runtime's metrics
        (the generator may outlive an app, e.g. in tests or after a reload: the latest runtime to serve it watches it)."""
        decoder = gen.decoder
        if decoder.on_step != self._observe_step:
            decoder.on_step = self._observe_step
            self.metrics.watch_queue_depth("generate", lambda: decoder.queue_depth)

    def _observe_step(self, rows: int) -> None:
        self.metrics.observe_batch("generate", rows)

    async def generate(self, prompts: list[list[int]], options: dict) -> list:
        """Answers through the model's decoding scheduler (``tunekit.models.decoding``): every request in
        flight shares its decoding steps, whatever its options, and joins at the next step rather than
        after the batch ahead of it; a request that times out is dropped from the batch."""
        options = dict(options)
        gen = options.pop("generator")
        return await self.within_timeout(asyncio.gather(*(gen.answer(p, **options) for p in prompts)))

    async def check_input(self, request: Request, texts: list[str]) -> None:
        """Input guardrails (over long texts in a worker thread: their regexes must not stall the event loop;
        short ones at once, cheaper than the hop): flags noted on the record; a blocking one answers 400."""
        short = sum(len(t) for t in texts) <= INLINE_GUARDRAIL_CHARS
        self._flags(request, self.guardrails.check_input(texts) if short else await run_in_threadpool(self.guardrails.check_input, texts))

    async def check_output(self, request: Request, text: str, context: str | None) -> str:
        """Output guardrails on one answer, in a worker thread: the (possibly redacted) text; a blocking flag answers 400."""
        text, flags = await run_in_threadpool(self.guardrails.check_output, text, context)
        self._flags(request, flags)
        return text

    def _flags(self, request: Request, flags: list[Flag]) -> None:
        rec = record(request)
        rec.flags.extend(flags)
        for flag in flags:
            self.metrics.guardrail_flag(flag.kind, flag.where, flag.action)
        blocking = self.guardrails.blocked(flags)
        if blocking is not None:
            raise blocked_error(blocking)

    async def write(self, rec: Record, route: str, status: int, latency_ms: float) -> None:
        """Log the request, in a worker thread (PII redaction is CPU work; a durable log waits on the disk).

        Shielded from cancellation: a client that hangs up does not unlog its request."""
        if self.log is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await run_in_threadpool(self._write, rec, route, status, latency_ms)
            except Exception:  # the answer is already made; the log's own check() makes /readyz fail
                logger.exception("request %s could not be logged", rec.id)

    def _write(self, rec: Record, route: str, status: int, latency_ms: float) -> None:
        assert self.log is not None
        self.log.log({
            "id": rec.id, "route": route, "model": rec.model, "version": rec.version, "adapter": rec.adapter, "status": status,
            "latency_ms": round(latency_ms, 2), "key_id": rec.key_id, "request": rec.request, "response": rec.response,
            "flags": [f.to_json() for f in rec.flags], "prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.completion_tokens,
        })


def record(request: Request) -> Record:
    """The request's record (made by the ``observe`` middleware; a bare one outside it)."""
    state = request.scope.setdefault("state", {})
    if "tunekit_record" not in state:
        state["tunekit_record"] = Record()
    return state["tunekit_record"]


class Observe:
    """ASGI middleware: request id header, metrics for every request, the log record for ``/v1/`` routes,
    written before the answer's last byte leaves (so a client that has its answer finds it in the log).

    A plain ASGI class rather than ``BaseHTTPMiddleware``, whose per-request task and streams cost about
    half of the server's own CPU time per request (3.5 of 6.8 ms with an instant model, bench/serve.py's
    machine): what a cheap model's throughput is bounded by."""

    def __init__(self, app, runtime: Runtime):
        self.app, self.runtime = app, runtime

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        runtime, started, request = self.runtime, time.perf_counter(), Request(scope)
        rec = record(request)
        status, finished = 500, False

        async def finish() -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            seconds = time.perf_counter() - started
            route = _route_template(request)
            runtime.metrics.observe_request(route, status, rec.model or "", seconds)
            if route.startswith(LOGGED_PREFIX) and not rec.deferred:
                if rec.request is None:  # a route with no model input (files, jobs, evals): the audit trail is who did what to which id
                    rec.request = {"method": request.method, "path": request.url.path}
                await runtime.write(rec, route, status, seconds * 1000)
            logger.info("%s %s %d %.1f ms", request.method, request.url.path, status, seconds * 1000)

        async def observed(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rec.id.encode("latin-1"))]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await finish()  # logged before the client has all of its answer
            await send(message)

        app = self.app
        if runtime.log is not None and scope["path"].startswith(LOGGED_PREFIX):
            try:
                runtime.log.check()  # a stopped log writer: 503 rather than an answer nobody can find later
            except TunekitError as exc:
                from tunekit.serve.handlers import error_response

                app = error_response(exc.http_status, str(exc), exc.code, None)
        try:
            with runtime.metrics.track_inflight():
                await app(scope, receive, observed)
        finally:
            await finish()


def _route_template(request: Request) -> str:
    """The matched route's path template (``/v1/adapters/{name}``), so metric labels stay bounded."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or ("/v1/unmatched" if request.url.path.startswith(LOGGED_PREFIX) else "/unmatched")


class BodyLimit:
    """ASGI middleware: the request body is read here, counting the bytes actually received, before
    any route parses it.

    - a body over ``max_bytes`` is answered 413, whatever ``Content-Length`` says (a declared length
      over the limit is refused before reading);
    - ``Content-Length`` together with ``Transfer-Encoding`` is conflicting framing: 400;
    - a body that does not arrive within ``timeout_s`` is answered 408.
    The body is then replayed to the app.

    ``streamed`` maps paths (file uploads) to their own, larger limit: their bodies are not held in
    memory here but passed through as they arrive, refused early only by a declared length over the
    limit; the route counts the bytes it reads and answers 413 past it.
    """

    def __init__(self, app, max_bytes: int, timeout_s: float = 30.0, streamed: dict[str, int] | None = None):
        self.app, self.max_bytes, self.timeout_s, self.streamed = app, max_bytes, timeout_s, streamed or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = [(k.lower(), v) for k, v in scope.get("headers") or []]
        lengths = [v for k, v in headers if k == b"content-length"]
        if lengths and any(k == b"transfer-encoding" for k, _ in headers):
            return await self._answer(send, 400, "the request has both Content-Length and Transfer-Encoding headers, which conflict; "
                                      "send one of them (HTTP/1.1, RFC 9112 section 6.3)", "conflicting_framing")
        if len(set(lengths)) > 1 or any(not v.strip().isdigit() for v in lengths):
            return await self._answer(send, 400, f"invalid Content-Length header {b', '.join(lengths).decode('latin-1')!r}; "
                                      "send one length in bytes", "invalid_content_length")
        limit = self.streamed.get(scope.get("path", ""))
        if limit is not None:
            if lengths and int(lengths[0]) > limit:
                return await self._too_large(send, int(lengths[0]), limit)
            return await self.app(scope, receive, send)
        if lengths and int(lengths[0]) > self.max_bytes:
            return await self._too_large(send, int(lengths[0]))
        messages, size = [], 0
        try:
            with anyio.fail_after(self.timeout_s):
                while True:
                    message = await receive()
                    messages.append(message)
                    size += len(message.get("body", b""))
                    if size > self.max_bytes:
                        return await self._too_large(send, size)
                    if message["type"] != "http.request" or not message.get("more_body"):
                        break
        except TimeoutError:
            return await self._answer(send, 408, f"the request body did not arrive within {self.timeout_s:g} s (setting body_timeout_s); "
                                      f"{size} bytes came; send the whole body at once", "body_timeout")

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send, size: int, limit: int | None = None) -> None:
        setting = "max_body_bytes" if limit is None else "max_file_bytes"
        await self._answer(send, 413, f"the request body has more than {limit or self.max_bytes} bytes ({size} or more), this server's limit "
                           f"(setting {setting}); send less per request", "body_too_large")

    async def _answer(self, send, status: int, message: str, code: str) -> None:
        from tunekit.serve.handlers import error_response

        # the body was not read to its end, so the connection cannot carry another request
        response = error_response(status, message, code, "body", headers={"Connection": "close"})
        await response({"type": "http"}, None, send)
