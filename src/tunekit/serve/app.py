"""The model server: ``create_app(settings)`` builds the FastAPI app, ``serve`` runs it.

The model loads in a background thread started by the lifespan, so the process answers at once:
``/healthz`` is always 200, ``/readyz`` is 503 until the model is loaded (or with the load error),
then 200. For a classification model, ``POST /v1/classify`` validates the inputs, runs the forward
pass in a worker thread (the event loop keeps answering; one pass at a time, or ``concurrent_batches``
of them: two by default on the ONNX runtime), and returns one prediction per input in input order. A generation model is served OpenAI-compatibly (``POST /v1/chat/completions``,
``POST /v1/completions``, ``GET /v1/models``: see ``openai_routes``). A route for the other kind
of model answers 400 (``wrong_task``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from tunekit import task_kinds
from tunekit.errors import ConfigError, DataError, ModelError
from tunekit.models.onnx import OnnxSequenceClassifier
from tunekit.serve.gauges import push_latest
from tunekit.data.multitask import SEP, label_name, tasks_of
from tunekit.serve import deployment as deployment_mod
from tunekit.serve import handlers, openai_routes
from tunekit.serve.feedback import check_feedback
from tunekit.serve.inputs import RequestError, check_strings, parse_inputs
from tunekit.serve.loading import LoadedModel, Loader, ModelSlot, default_loader
from tunekit.serve.runtime import BodyLimit, Observe, Runtime, record
from tunekit.serve.schemas import (
    AdapterList,
    AdapterLoad,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    FeedbackAck,
    FeedbackRequest,
    Health,
    Prediction,
    PredictResponse,
    Ready,
)
from tunekit.serve.settings import ServeSettings

logger = logging.getLogger("tunekit.serve")

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 413, 422, 429, 503, 504)}
DESCRIPTION = """Serves the tunekit model `{model}`.

- Classification models: `POST /v1/classify`.
- Generation models, OpenAI-compatibly (the `openai` client works with `base_url` set to this server's `/v1`):
  `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.

Errors have OpenAI's shape: `{{"error": {{"message", "type", "code", "param"}}}}`."""


def create_app(settings: ServeSettings, loader: Loader | None = None) -> FastAPI:
    """The FastAPI app serving ``settings.model``; ``loader`` replaces the default one in tests."""
    if settings.model is None:
        raise ConfigError("no model to serve: set `model` (a registry reference or a model folder), or use service mode "
                          "(`tunekit serve` without --model: tunekit.service.app.create_service_app)")
    slot = ModelSlot(settings, loader or default_loader)
    runtime = Runtime(settings)
    deployment = deployment_mod.Deployment(settings, loader or default_loader)  # a shadow or canary challenger (deployment.json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        slot.start(on_loaded=lambda m: runtime.metrics.set_model(m.name, m.version, m.task, m.model.info.base_model.id))
        runtime.start(partial(_classify_batch, slot))
        slot.watch(settings.reload_interval_s)
        deployment.watch(settings.deployment_poll_s)
        yield
        slot.stop_watching()
        await deployment.stop()
        await runtime.stop()  # uvicorn has stopped accepting and drained in-flight requests by now

    app = FastAPI(title="tunekit model server", version="1", description=DESCRIPTION.format(model=settings.model), lifespan=lifespan)
    app.state.settings, app.state.slot, app.state.runtime, app.state.deployment = settings, slot, runtime, deployment
    handlers.install(app)
    inference, admin = runtime.require("inference"), runtime.require("admin")
    deployment_mod.install(app, deployment, slot, runtime, admin)
    deployment.slot = slot
    openai_routes.install(app, openai_routes.SingleModel(slot, deployment), settings, runtime, [inference])
    app.add_middleware(Observe, runtime=runtime)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)

    @app.get("/healthz", response_model=Health, summary="Liveness: the process is up")
    async def healthz() -> Health:
        return Health()

    @app.get("/readyz", response_model=Ready, responses={503: {"model": ErrorResponse}}, summary="Readiness: the model is loaded")
    async def readyz() -> Ready:
        loaded = slot.require()
        if runtime.log is not None:
            runtime.log.check()  # a stopped log writer: not ready, rather than answering without logging
        return Ready(model=loaded.name, version=loaded.version)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        if slot.loaded is not None:  # the latest `tunekit monitor` verdict for the served model, as tunekit_drift_* gauges
            await run_in_threadpool(push_latest, runtime.metrics, settings.workspace_dir, slot.loaded.name)
        deployment.push_gauges(runtime.metrics)
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, summary="Classify texts or text pairs", dependencies=[inference])
    async def classify(request: ClassifyRequest, http: Request) -> ClassifyResponse:
        champion, rec, rows = await _rows(slot, runtime, settings, request, http, "classification")
        task = _task(champion, request.task)
        rec.request["task"] = task
        loaded, outputs = await _answer(deployment, runtime, http, rec, champion, rows)
        predictions = _classified(loaded, outputs, task)
        rec.response = _logged(predictions, task)
        deployment.shadow(runtime, rec, "/v1/classify", rows, champion, lambda m, out: _logged(_classified(m, out, task), task))
        return ClassifyResponse(model=loaded.name, version=loaded.version, predictions=predictions, id=rec.id, task=task,
                                flags=[f.to_json() for f in rec.flags])

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS, summary="Regression: predict a value per text or text pair",
              dependencies=[inference])
    async def predict(request: ClassifyRequest, http: Request) -> PredictResponse:
        champion, rec, rows = await _rows(slot, runtime, settings, request, http, "regression")
        _task(champion, request.task)
        loaded, outputs = await _answer(deployment, runtime, http, rec, champion, rows)
        values = [float(v) for v in outputs]
        rec.response = values
        deployment.shadow(runtime, rec, "/v1/predict", rows, champion, lambda m, out: [float(v) for v in out])
        return PredictResponse(model=loaded.name, version=loaded.version, values=values, id=rec.id, flags=[f.to_json() for f in rec.flags])

    @app.post("/v1/feedback", response_model=FeedbackAck, responses=ERRORS | {404: {"model": ErrorResponse}},
              summary="Feedback on an answer: a rating, the correct label or answer", dependencies=[inference])
    async def feedback(body: FeedbackRequest, http: Request) -> FeedbackAck:
        if runtime.log is None:
            raise RequestError("feedback needs the request log, which this server runs without (log_requests: false)", "feedback_disabled", None, 400)
        rec = record(http)
        rec.request = body.model_dump()
        check_strings(rec.request, "")
        logged = await run_in_threadpool(runtime.log.request, body.request_id)
        check_feedback(body, logged, slot.require())
        stored = await run_in_threadpool(runtime.log.add_feedback, body.request_id, body.rating, body.label, body.answer, body.comment,
                                         rec.key_id, body.index)
        return FeedbackAck(id=stored, request_id=body.request_id)

    @app.post("/v1/reload", response_model=Ready, responses=ERRORS, summary="Serve the version the alias points to now (admin)",
              dependencies=[admin])
    async def reload() -> Ready:
        await runtime.within_timeout(run_in_threadpool(slot.reload))
        loaded = slot.require()
        return Ready(model=loaded.name, version=loaded.version)

    @app.get("/v1/adapters", response_model=AdapterList, summary="Adapters loaded on the base model", dependencies=[admin])
    async def list_adapters() -> AdapterList:
        gen = _generator(slot)
        return AdapterList(base_model=gen.base_model, adapters={k: str(v) for k, v in gen.adapters.items()})

    @app.post("/v1/adapters", response_model=AdapterList, responses=ERRORS, summary="Load an adapter (admin)", dependencies=[admin])
    async def load_adapter(body: AdapterLoad) -> AdapterList:
        gen = _generator(slot)
        if body.name in gen.adapters or body.name == gen.base_model:
            raise RequestError(f"name: {body.name!r} is already served; unload it first (DELETE /v1/adapters/{body.name}) or pick another name",
                               "adapter_exists", "name", 409)
        check_strings(body.model_dump(), "")
        try:
            path = await run_in_threadpool(_model_path, body.source, settings)
            await runtime.within_timeout(run_in_threadpool(gen.add_adapter, body.name, path))
        except (ConfigError, DataError, ModelError) as exc:  # the source the admin named is not a loadable adapter: their input
            raise RequestError(f"source: {exc}", "invalid_adapter", "source", 422) from None
        return AdapterList(base_model=gen.base_model, adapters={k: str(v) for k, v in gen.adapters.items()})

    @app.delete("/v1/adapters/{name}", response_model=AdapterList, responses=ERRORS | {404: {"model": ErrorResponse}},
                summary="Unload an adapter (admin)", dependencies=[admin])
    async def unload_adapter(name: str) -> AdapterList:
        gen = _generator(slot)
        if name not in gen.adapters:
            raise RequestError(f"no adapter {name!r} is loaded; loaded: {', '.join(gen.adapters)}", "adapter_not_found", "name", 404)
        await run_in_threadpool(gen.remove_adapter, name)
        return AdapterList(base_model=gen.base_model, adapters={k: str(v) for k, v in gen.adapters.items()})

    return app


async def _rows(slot: ModelSlot, runtime: Runtime, settings: ServeSettings, request: ClassifyRequest, http: Request, task: str):
    """The served model, the request's log record, and its (text, pair) rows: checked against the
    model's task, the limits and the input guardrails. The log redacts the texts itself, off the event loop."""
    loaded = slot.require()
    rec = record(http)
    rec.model, rec.version = loaded.name, loaded.version
    if loaded.task != task:
        raise RequestError(f"{http.url.path}: this server serves {loaded.name!r}, a {loaded.task} model; {ROUTES['generation' if task_kinds.kind(loaded.task).causal else loaded.task]}", "wrong_task", None, 400)
    texts, pairs = parse_inputs(request.inputs, loaded.expects_pairs, settings.max_inputs, settings.max_chars)
    rec.request = {"inputs": texts}
    if request.task is not None:
        check_strings(request.task, "task")
    if request.metadata:
        check_strings(request.metadata, "metadata")
        rec.request["metadata"] = request.metadata
    await runtime.check_input(http, texts + (pairs or []))
    return loaded, rec, list(zip(texts, pairs or [None] * len(texts)))


async def _answer(deployment: deployment_mod.Deployment, runtime: Runtime, http: Request, rec, champion, rows) -> tuple:
    """(the model that answers, its raw outputs): the champion through the micro-batcher, or in a
    canary the challenger for the callers in its share; the record notes the arm while a deployment runs."""
    started = time.perf_counter()
    arm, loaded = deployment.arm(http, rec.key_id, champion)
    if loaded is not champion:
        try:
            outputs = await runtime.within_timeout(run_in_threadpool(deployment.predict, loaded, rows))
        except Exception:  # noqa: BLE001 - a failing canary must not fail its callers: the champion answers (counted, logged)
            logger.exception("canary %s v%s failed on request %s; the champion answers", loaded.name, loaded.version, rec.id)
            deployment.counts["canary_failed"] += 1
            arm, loaded = "champion", champion
    if loaded is champion:
        outputs = await runtime.classify(rows)
    if deployment.active(champion) is not None:
        rec.model, rec.version = loaded.name, loaded.version
        rec.request["arm"] = arm
        deployment.observe(arm, (time.perf_counter() - started) * 1000)
    return loaded, outputs


def _classified(loaded, outputs, task: str | None) -> list[Prediction]:
    probs, labels = np.asarray(outputs), loaded.model.labels
    if task is not None:  # multi-task: the softmax over this task's labels alone (tunekit.data.multitask)
        probs, labels = _task_probs(probs, labels, task)
    return _predictions(probs, labels)


def _logged(predictions: list[Prediction], task: str | None) -> list[dict]:
    """What the request log keeps of the predictions: label (with its task prefix), score, and margin (the score less the
    runner-up's probability: the annotation queue's uncertainty, ``monitor.annotation``)."""
    return [{"label": p.label if task is None else f"{task}{SEP}{p.label}", "score": round(p.score, 4), "margin": round(_margin(p), 4)}
            for p in predictions]


def _margin(prediction: Prediction) -> float:
    runner_up = sorted(prediction.probabilities.values(), reverse=True)[1:2]
    return prediction.score - (runner_up[0] if runner_up else 0.0)


FORWARD_ROWS = 8  # on CPU, 8-row chunks of a length-sorted micro-batch pad far less than one 32-row pass (bench/serve.py)
LENGTH_SLACK, LENGTH_SLACK_CHARS = 1.25, 8  # ONNX: a pass's longest row is at most 1.25x its shortest plus 8 characters
ROUTES = {"classification": "send its requests to POST /v1/classify", "regression": "send its requests to POST /v1/predict",
          "generation": "send its requests to POST /v1/chat/completions or POST /v1/completions (OpenAI's API)"}


def _classify_batch(slot: ModelSlot, rows: list[tuple[str, str | None]]) -> list:
    """One forward pass over the rows of every request in the micro-batch: class probabilities, or values for regression."""
    loaded = slot.require()
    with slot.lock:  # `forward_concurrency` passes at a time (torch: one; more would only fight over the same cores)
        return forward_rows(loaded, rows, slot.batch_size)


def forward_rows(loaded: LoadedModel, rows: list[tuple[str, str | None]], batch_size: int) -> list:
    """What the micro-batcher's function computes for ``rows`` (text, pair or None), without the lock:
    also the model's own throughput with no HTTP in front of it (``bench/serve.py``)."""
    texts = [t for t, _ in rows]
    pairs = [p for _, p in rows] if rows and rows[0][1] is not None else None
    run = loaded.model.predict if task_kinds.kind(loaded.task).numeric else loaded.model.predict_proba
    if isinstance(loaded.model.model, OnnxSequenceClassifier):
        # ONNX Runtime's int8 passes cost about the same per token whatever the batch, so padding is the
        # waste to avoid: each pass takes rows of about the same length (`length_groups`)
        out: list = [None] * len(rows)
        for group in length_groups([len(t) + len(p or "") for t, p in rows], FORWARD_ROWS):
            answers = run([texts[i] for i in group], [pairs[i] for i in group] if pairs else None, len(group))
            for i, answer in zip(group, answers):
                out[i] = answer
        return out
    # rows are sorted by length and run in chunks of FORWARD_ROWS, each padded only to its own longest row
    chunk = FORWARD_ROWS if loaded.model.device.type == "cpu" else batch_size
    return list(run(texts, pairs, chunk))


def length_groups(lengths: list[int], max_rows: int, slack: float = LENGTH_SLACK) -> list[list[int]]:
    """Indices of ``lengths`` (characters per row), shortest first, in groups of at most ``max_rows``
    whose longest row is at most ``slack`` times the shortest (plus a few characters): padded to its
    longest row, such a group wastes little."""
    groups: list[list[int]] = []
    first = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and len(groups[-1]) < max_rows and lengths[i] <= first * slack + LENGTH_SLACK_CHARS:
            groups[-1].append(i)
        else:
            groups.append([i])
            first = lengths[i]
    return groups


def _generator(slot: ModelSlot):
    loaded = slot.require()
    if not task_kinds.kind(loaded.task).causal or not loaded.model.adapters:
        raise RequestError(f"{loaded.name!r} is not a PEFT generation model; only those hold several adapters", "no_adapters", None, 400)
    return loaded.model


def _model_path(source: str, settings: ServeSettings) -> str:
    from pathlib import Path

    try:
        path = Path(source).expanduser()
        exists = path.exists()
    except (OSError, ValueError, RuntimeError) as exc:  # a name too long, a NUL byte, an unknown ~user
        raise RequestError(f"source: {source[:80]!r} is not a usable path ({type(exc).__name__}: {exc}); give a tunekit model directory "
                           "or a registry reference (NAME@ALIAS, NAME/VERSION)", "adapter_not_found", "source", 422) from None
    if exists:
        return str(path)
    if source.startswith((".", "/", "~")):
        raise RequestError(f"source: no such folder {source!r}", "adapter_not_found", "source", 404)
    from tunekit.registry import default_tracking_uri, resolve

    return str(resolve(source, settings.tracking_uri or default_tracking_uri()).path)


def _task(loaded, task: str | None) -> str | None:
    """The request's task, checked: required by a multi-task model, refused by any other."""
    tasks = loaded.model.info.tasks
    if tasks is None:
        if task is not None:
            raise RequestError(f"task: {loaded.name!r} is a single-task model; leave `task` out", "task_not_expected", "task", 400)
        return None
    if task is None:
        raise RequestError(f"task: {loaded.name!r} is a multi-task model; name the task of the inputs in `task`, one of {', '.join(tasks)}",
                           "task_required", "task", 400)
    if task not in tasks:
        raise RequestError(f"task: unknown task {task!r}; {loaded.name!r} knows {', '.join(tasks)}", "unknown_task", "task", 400)
    return task


def _task_probs(probs: np.ndarray, labels: list[str], task: str) -> tuple[np.ndarray, list[str]]:
    """The columns of ``task``'s labels, renormalised, with the task prefix taken off the names."""
    ids = tasks_of(labels)[task]
    kept = probs[:, ids]
    return kept / kept.sum(axis=1, keepdims=True), [label_name(labels[i]) for i in ids]


def _predictions(probs: np.ndarray, labels: list[str]) -> list[Prediction]:
    best = probs.argmax(axis=1)
    return [
        Prediction(label=labels[i], score=float(row[i]), probabilities={label: float(p) for label, p in zip(labels, row)})
        for row, i in zip(probs, best)
    ]


def serve(settings: ServeSettings, app: FastAPI | None = None) -> None:
    """Run the server (``app``, default ``create_app(settings)``) with uvicorn until interrupted; prints
    where it listens and where the docs are."""
    import uvicorn

    if settings.backend == "vllm":
        from tunekit.serve.loading import model_directory
        from tunekit.serve.vllm_backend import run_vllm

        return run_vllm(model_directory(settings), settings.host, settings.port, settings.workspace_dir)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    print(f"tunekit: serving {settings.model or 'service mode (files, fine-tuning jobs, evals)'} at {url}  (API docs: {url}/docs)", flush=True)
    # On SIGTERM uvicorn stops accepting, waits for in-flight requests (up to 30 s), then runs the
    # lifespan's shutdown, which finishes queued batches and commits the request log.
    uvicorn.run(app or create_app(settings), host=settings.host, port=settings.port, access_log=False, log_level="info",
                timeout_graceful_shutdown=30)
