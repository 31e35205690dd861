"""What a production request passes through besides the model: auth, rate limit, timeout,
guardrails, micro-batching, metrics and the request log, held by one ``Runtime`` per app.

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

from fastapi import Depends, Request

from tunekit.errors import TunekitError
from tunekit.serve.batcher import MicroBatcher
from tunekit.serve.guardrails import Flag, GuardrailBlocked, Guardrails
from tunekit.serve.keys import FILENAME as KEYS_FILE
from tunekit.serve.keys import KeyInfo, KeyStore, authenticate, startup_message
from tunekit.serve.metrics import ServerMetrics
from tunekit.serve.ratelimit import RateLimiter
from tunekit.serve.requestlog import RequestLog
from tunekit.serve.settings import ServeSettings

logger = logging.getLogger("tunekit.serve")

LOG_FILE = "serving.db"
LOGGED_PREFIX = "/v1/"  # model and feedback routes are logged; probes and /metrics only counted


class RequestTimeout(TunekitError):
    """The model did not answer within ``request_timeout_s``."""

    http_status = 504

    def __init__(self, seconds: float):
        super().__init__(f"the model did not answer within {seconds:g} s (setting request_timeout_s); retry later, send fewer "
                         "inputs or ask for fewer tokens")
        self.code, self.param = "request_timeout", None


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
        self.keys = KeyStore(settings.workspace_dir / KEYS_FILE) if settings.auth else None
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.guardrails = Guardrails(settings.guardrails)
        self.metrics = ServerMetrics()
        self.log = (RequestLog(settings.workspace_dir / LOG_FILE, durable=settings.durable_log, redact=settings.guardrails.redact_logs)
                    if settings.log_requests else None)
        self.batchers: dict[str, MicroBatcher] = {}

    def start(self, classify_fn, generate_fn) -> None:
        """Create the micro-batchers (they need the running event loop) and say how auth stands."""
        s = self.settings
        for kind, fn in (("classify", classify_fn), ("generate", generate_fn)):
            batcher = MicroBatcher(fn, s.batch_size, s.max_wait_ms, kind, on_batch=lambda n, k=kind: self.metrics.observe_batch(k, n))
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
            info = authenticate(self.keys, request.headers.get("authorization"), scope, request.headers.get("x-api-key"))
            record(request).key_id = info.key_id if info else None
            self.limiter.enforce(info.key_id if info else (request.client.host if request.client else "local"))
            return info

        return Depends(check)

    async def within_timeout(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.settings.request_timeout_s)
        except TimeoutError:
            raise RequestTimeout(self.settings.request_timeout_s) from None

    async def classify(self, rows: list[tuple[str, str | None]]) -> list:
        return await self.within_timeout(self.batchers["classify"].submit_many(rows))

    async def generate(self, prompts: list[list[int]], options: dict) -> list:
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
        return await self.within_timeout(self.batchers["generate"].submit_many([(p, options) for p in prompts], key=key))

    def check_input(self, request: Request, texts: list[str]) -> None:
        """Input guardrails: flags noted on the record; a blocking one answers 400."""
        self._flags(request, self.guardrails.check_input(texts))

    def check_output(self, request: Request, text: str, context: str | None) -> str:
        """Output guardrails on one answer: the (possibly redacted) text; a blocking flag answers 400."""
        text, flags = self.guardrails.check_output(text, context)
        self._flags(request, flags)
        return text

    def _flags(self, request: Request, flags: list[Flag]) -> None:
        rec = record(request)
        rec.flags.extend(flags)
        for flag in flags:
            self.metrics.guardrail_flag(flag.kind, flag.where, flag.action)
        blocking = self.guardrails.blocked(flags)
        if blocking is not None:
            raise GuardrailBlocked(blocking)

    def write(self, rec: Record, route: str, status: int, latency_ms: float) -> None:
        if self.log is None:
            return
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


def observe_middleware(runtime: Runtime):
    """HTTP middleware: request id header, metrics for every request, the log record for ``/v1/`` routes."""

    async def observe(request: Request, call_next):
        started = time.perf_counter()
        rec = record(request)
        status = 500
        try:
            with runtime.metrics.track_inflight():
                response = await call_next(request)
            status = response.status_code
            response.headers["x-request-id"] = rec.id
            return response
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(request)
            runtime.metrics.observe_request(route, status, rec.model or "", seconds)
            if route.startswith(LOGGED_PREFIX) and not rec.deferred:
                runtime.write(rec, route, status, seconds * 1000)
            logger.info("%s %s %d %.1f ms", request.method, request.url.path, status, seconds * 1000)

    return observe


def _route_template(request: Request) -> str:
    """The matched route's path template (``/v1/adapters/{name}``), so metric labels stay bounded."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or ("/v1/unmatched" if request.url.path.startswith(LOGGED_PREFIX) else "/unmatched")


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is answered 413 before any route parses it.

    ``Content-Length`` is checked first; a chunked body is read up to the limit and replayed to the app.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send, int(length))
        if length is not None:
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send, size)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send, size: int) -> None:
        from tunekit.serve.handlers import error_response

        response = error_response(413, f"the request body has more than {self.max_bytes} bytes ({size} or more), this server's limit "
                                  "(setting max_body_bytes); send less per request", "body_too_large", "body")
        await response({"type": "http"}, None, send)
