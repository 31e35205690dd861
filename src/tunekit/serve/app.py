"""The model server: ``create_app(settings)`` builds the FastAPI app, ``serve`` runs it.

The model loads in a background thread started by the lifespan, so the process answers at once:
``/healthz`` is always 200, ``/readyz`` is 503 until the model is loaded (or with the load error),
then 200. For a classification model, ``POST /v1/classify`` validates the inputs, runs one forward
pass at a time in a worker thread (the event loop keeps answering), and returns one prediction per
input in input order. A generation model is served OpenAI-compatibly (``POST /v1/chat/completions``,
``POST /v1/completions``, ``GET /v1/models``: see ``openai_routes``). A route for the other kind
of model answers 400 (``wrong_task``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from tunekit.serve import handlers, openai_routes
from tunekit.serve.inputs import RequestError, parse_inputs
from tunekit.serve.loading import LoadedModel, Loader, ModelSlot, default_loader
from tunekit.serve.schemas import ClassifyRequest, ClassifyResponse, ErrorResponse, Health, Prediction, Ready
from tunekit.serve.settings import ServeSettings

logger = logging.getLogger("tunekit.serve")

ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 422, 503)}
DESCRIPTION = """Serves the tunekit model `{model}`.

- Classification models: `POST /v1/classify`.
- Generation models, OpenAI-compatibly (the `openai` client works with `base_url` set to this server's `/v1`):
  `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.

Errors have OpenAI's shape: `{{"error": {{"message", "type", "code", "param"}}}}`."""


def create_app(settings: ServeSettings, loader: Loader | None = None) -> FastAPI:
    """The FastAPI app serving ``settings.model``; ``loader`` replaces the default one in tests."""
    slot = ModelSlot(settings, loader or default_loader)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        slot.start()
        yield

    app = FastAPI(title="tunekit model server", version="1", description=DESCRIPTION.format(model=settings.model), lifespan=lifespan)
    app.state.settings, app.state.slot = settings, slot
    handlers.install(app)
    openai_routes.install(app, slot, settings)
    app.middleware("http")(_log_request)

    @app.get("/healthz", response_model=Health, summary="Liveness: the process is up")
    async def healthz() -> Health:
        return Health()

    @app.get("/readyz", response_model=Ready, responses={503: {"model": ErrorResponse}}, summary="Readiness: the model is loaded")
    async def readyz() -> Ready:
        loaded = slot.require()
        return Ready(model=loaded.name, version=loaded.version)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, summary="Classify texts or text pairs")
    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        loaded = slot.require()
        if loaded.task != "classification":
            raise RequestError(
                f"/v1/classify: this server serves {loaded.name!r}, a generation model; send its requests to POST /v1/chat/completions "
                "or POST /v1/completions (OpenAI's API)", "wrong_task", None, 400,
            )
        texts, pairs = parse_inputs(request.inputs, loaded.expects_pairs, settings.max_inputs, settings.max_chars)
        probs = await run_in_threadpool(_predict, slot, loaded, texts, pairs, settings.batch_size)
        return ClassifyResponse(model=loaded.name, version=loaded.version, predictions=_predictions(probs, loaded.model.labels))

    return app


def _predict(slot: ModelSlot, loaded: LoadedModel, texts: list[str], pairs: list[str] | None, batch_size: int) -> np.ndarray:
    with slot.lock:  # one forward pass at a time: concurrent passes only fight over the same cores
        return loaded.model.predict_proba(texts, pairs, batch_size)


def _predictions(probs: np.ndarray, labels: list[str]) -> list[Prediction]:
    best = probs.argmax(axis=1)
    return [
        Prediction(label=labels[i], score=float(row[i]), probabilities={label: float(p) for label, p in zip(labels, row)})
        for row, i in zip(probs, best)
    ]


async def _log_request(request: Request, call_next):
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        ms = (time.perf_counter() - started) * 1000
        logger.info("%s %s %d %.1f ms", request.method, request.url.path, status, ms)


def serve(settings: ServeSettings) -> None:
    """Run the server with uvicorn until interrupted; prints where it listens and where the docs are."""
    import uvicorn

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    print(f"tunekit: serving {settings.model} at {url}  (API docs: {url}/docs)", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=False, log_level="info")
