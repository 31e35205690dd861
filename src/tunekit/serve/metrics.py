"""The server's Prometheus metrics, served at ``GET /metrics``.

Each app owns a ``ServerMetrics`` with its own registry (not prometheus_client's global one), so
several apps in one process, as in the tests, do not clash. The names follow Prometheus'
conventions (base units, ``_total`` for counters, ``_seconds`` for durations):

| metric | type | labels |
|---|---|---|
| ``tunekit_requests_total`` | counter | route, status, model |
| ``tunekit_request_duration_seconds`` | histogram | route, model |
| ``tunekit_time_to_first_token_seconds`` | histogram | model |
| ``tunekit_prompt_tokens_total`` | counter | model |
| ``tunekit_generated_tokens_total`` | counter | model |
| ``tunekit_batch_size`` | histogram | kind (classify, generate) |
| ``tunekit_queue_depth`` | gauge | kind |
| ``tunekit_guardrail_flags_total`` | counter | kind, where, action |
| ``tunekit_model_info`` | gauge, always 1 | model, version, task, base_model |
| ``tunekit_inflight_requests`` | gauge | |

``route`` is the route's path template (``/v1/classify``), never the raw URL, so a scanner probing
random paths cannot grow the label set without bound. ``set_gauge`` adds gauges later stages
(monitoring: drift, live quality) publish without a change here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.context_managers import InprogressTracker

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class ServerMetrics:
    """The metrics of one server, in a registry of its own; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunekit_requests_total", "Requests answered, by route, HTTP status and model.", ["route", "status", "model"], registry=r)
        self.duration = Histogram("tunekit_request_duration_seconds", "Time from request to complete response.", ["route", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tunekit_time_to_first_token_seconds", "Generation: time from request to the first generated token.", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("tunekit_prompt_tokens_total", "Generation: prompt tokens read.", ["model"], registry=r)
        self.generated_tokens = Counter("tunekit_generated_tokens_total", "Generation: tokens generated.", ["model"], registry=r)
        self.batch_size = Histogram("tunekit_batch_size", "Rows per forward pass of the micro-batcher.", ["kind"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("tunekit_queue_depth", "Rows waiting for a batch.", ["kind"], registry=r)
        self.guardrail_flags = Counter("tunekit_guardrail_flags_total", "Guardrail flags raised, by kind, where (input/output) and action taken.", ["kind", "where", "action"], registry=r)
        self.model_info = Gauge("tunekit_model_info", "The served model; always 1.", ["model", "version", "task", "base_model"], registry=r)
        self.inflight = Gauge("tunekit_inflight_requests", "Requests being handled now.", registry=r)
        self._extra: dict[str, Gauge] = {}

    def observe_request(self, route: str, status: int, model: str, seconds: float) -> None:
        """One answered request: counted by route, status and model; its latency into the histogram."""
        self.requests.labels(route=route, status=str(status), model=model).inc()
        self.duration.labels(route=route, model=model).observe(seconds)

    def observe_generation(self, model: str, prompt_tokens: int, generated_tokens: int, ttft_seconds: float | None = None) -> None:
        """One generation: its token counts and, when it produced a token, the time to the first one."""
        self.prompt_tokens.labels(model=model).inc(prompt_tokens)
        self.generated_tokens.labels(model=model).inc(generated_tokens)
        if ttft_seconds is not None:
            self.ttft.labels(model=model).observe(ttft_seconds)

    def observe_batch(self, kind: str, size: int) -> None:
        """One forward pass of ``size`` rows (``kind``: classify or generate); fits ``MicroBatcher(on_batch=...)``."""
        self.batch_size.labels(kind=kind).observe(size)

    def set_queue_depth(self, kind: str, depth: int) -> None:
        self.queue_depth.labels(kind=kind).set(depth)

    def watch_queue_depth(self, kind: str, depth: Callable[[], float]) -> None:
        """Read the queue depth from ``depth()`` at each scrape (e.g. ``lambda: batcher.queue_depth``)."""
        self.queue_depth.labels(kind=kind).set_function(depth)

    def guardrail_flag(self, kind: str, where: str, action: str) -> None:
        """A guardrail fired: ``kind`` (pii, toxicity, ...), ``where`` (input, output), ``action`` (flag, block, redact)."""
        self.guardrail_flags.labels(kind=kind, where=where, action=action).inc()

    def set_model(self, model: str, version: str | None, task: str, base_model: str | None) -> None:
        """Publish the served model (replacing the previous one, e.g. after a reload)."""
        self.model_info.clear()
        self.model_info.labels(model=model, version=version or "", task=task, base_model=base_model or "").set(1)

    def track_inflight(self) -> InprogressTracker:
        """A context manager counting a request as in flight while it runs (works in ``async def`` too)."""
        return self.inflight.track_inprogress()

    def set_gauge(self, name: str, value: float, help: str, labels: dict[str, str] | None = None) -> None:
        """Set gauge ``name`` (created on first use) to ``value``; for metrics later stages publish.

        The label names are fixed by the first call; a later call with others is a ``ValueError``.
        """
        labels = labels or {}
        gauge = self._extra.get(name)
        if gauge is None:
            if not _NAME.fullmatch(name):
                raise ValueError(f"metric name {name!r}: use letters, digits, '_' and ':' and do not start with a digit")
            gauge = self._extra[name] = Gauge(name, help, sorted(labels), registry=self.registry)
        if set(gauge._labelnames) != set(labels):  # prometheus_client has no public accessor
            raise ValueError(f"gauge {name!r} has labels {sorted(gauge._labelnames)}, got {sorted(labels)}")
        (gauge.labels(**labels) if labels else gauge).set(value)

    def render(self) -> tuple[bytes, str]:
        """The ``/metrics`` body in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
