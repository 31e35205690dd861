"""Service mode's app: ``tunekit serve`` without ``--model``.

One port serves OpenAI's files, fine-tuning jobs and evals APIs, and chat/text completions for every
fine-tuned model of the caller's project, with the same keys, rate limits, guardrails, request log
and metrics as a single-model server (``tunekit.serve.runtime``). Jobs run in worker processes: the
server starts ``settings.workers`` of them beside itself (``tunekit worker``), or none when workers
run on other machines against a shared queue. Keeping training out of the server process means a
job never slows a chat request's event loop, and a worker killed mid-job is recovered by the next.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response

from tunekit.artifacts import Workspace
from tunekit.errors import RequestError
from tunekit.serve import handlers, openai_routes
from tunekit.serve.app import serve
from tunekit.serve.runtime import BodyLimit, Observe, Runtime
from tunekit.serve.schemas import Health
from tunekit.serve.settings import ServeSettings
from tunekit.service import evals, files, jobs_api
from tunekit.service.catalogue import Catalogue
from tunekit.service.jobs import JobStore
from tunekit.service.pool import ModelPool
from tunekit.service.queue import queue_for
from tunekit.ui import install as install_console

__all__ = ["create_service_app", "run"]

logger = logging.getLogger("tunekit.service")


def create_service_app(settings: ServeSettings) -> FastAPI:
    workspace = Workspace(settings.workspace_dir)
    runtime = Runtime(settings)
    pool = ModelPool(workspace, settings.device)
    store, catalogue, queue = files.FileStore(workspace, settings.max_file_bytes), Catalogue(workspace), queue_for(workspace)
    workers: list[subprocess.Popen] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start(_no_classifier)
        # one process per job slot: a job seeds torch's global generators, so two jobs must not share a process
        workers.extend(start_worker(settings) for _ in range(settings.workers))
        yield
        for proc in workers:  # SIGTERM: a job in progress is picked up again (from its checkpoint) by the next worker
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        await runtime.stop()

    app = FastAPI(title="tunekit service", version="1", lifespan=lifespan,
                  description="OpenAI-compatible files, fine-tuning jobs, evals and chat completions for fine-tuned models.")
    app.state.settings, app.state.runtime, app.state.pool = settings, runtime, pool
    handlers.install(app)
    openai_routes.install(app, pool, settings, runtime, [runtime.require("inference")])
    app.include_router(files.router(store, runtime.require))
    app.include_router(jobs_api.router(JobStore(workspace), store, catalogue, queue, runtime.require))
    app.include_router(evals.router(evals.EvalStore(workspace.service_db), runtime.require, store.content, _completer(pool),
                                    allow_python=settings.allow_python_graders))
    install_console(app, settings, runtime)  # the web console at /ui, a client of the routes above
    app.add_middleware(Observe, runtime=runtime)
    # uploads stream to the files route (which counts what it reads); every other body is capped as for one model
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s,
                       streamed={"/v1/files": settings.max_file_bytes + 65536, "/ui/api/v1/files": settings.max_file_bytes + 65536})

    @app.get("/healthz", response_model=Health, summary="Liveness: the process is up")
    async def healthz() -> Health:
        return Health()

    @app.get("/readyz", summary="Readiness: the request log is writing")
    async def readyz() -> dict:
        if runtime.log is not None:
            runtime.log.check()
        return {"status": "ready", "mode": "service"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    return app


def start_worker(settings: ServeSettings) -> subprocess.Popen:
    """A ``tunekit worker`` process on the server's workspace (one job at a time)."""
    command = [sys.executable, "-m", "tunekit.cli", "worker", "--workspace", str(settings.workspace_dir),
               "--stale-after", str(settings.stale_after_s)]
    logger.info("starting %s", " ".join(command))
    return subprocess.Popen(command)


def _completer(pool: ModelPool):
    """``complete(project, model, messages, params)`` for evals: a fine-tuned model's greedy (or sampled) answer."""

    def complete(project: str, model: str, messages: list[dict], params: dict) -> str:
        loaded = pool.get(project, model)
        gen = loaded.model
        prompt = gen.encode_chat(messages)
        adapter = model if gen.adapters else None
        with gen.lock:
            [answer] = gen.generate([prompt], max_new_tokens=int(params.get("max_completion_tokens") or params.get("max_tokens") or 128),
                                    temperature=float(params.get("temperature") or 0.0), top_p=float(params.get("top_p") or 1.0),
                                    seed=params.get("seed"), adapter=adapter)
        return answer.text

    return complete


def _no_classifier(rows):
    raise RequestError("service mode serves fine-tuned generation models; classify with `tunekit serve --model NAME@champion`",
                       "wrong_task", None, 400)


def run(settings: ServeSettings) -> None:
    """``tunekit serve`` without ``--model``."""
    serve(settings, create_service_app(settings))
