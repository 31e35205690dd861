"""Shadow and canary deployments of a challenger beside the served champion, switchable at run time.

A deployment is a small JSON file, ``WORKSPACE/deployment.json`` (``DeploymentState``), so every
way of switching it works on a running server without a restart: the admin route
``PUT /v1/deployment`` (which loads the challenger before it answers), ``tunekit deploy`` (which
writes the file; the server's watcher notices within ``deployment_poll_s``) and ``tunekit monitor
--decide`` (which turns a rolled-back canary off).

- ``shadow``: the challenger answers a copy of every request *after* the champion's answer has gone
  to the client (a background task, so it adds no latency to that request); its answer is logged
  as a row of its own (``request.shadow_of`` = the champion's request id, ``request.arm`` =
  ``shadow``) and never returned. A failing or overloaded shadow only costs a logged error and a
  counter, never the client's request: at most ``MAX_SHADOW_TASKS`` run at once, more are skipped.
- ``canary``: a share of traffic is answered by the challenger. The split is sticky: a caller is
  hashed (with the challenger's reference as salt, so a new canary draws a new sample) from the
  user-id header (``user_header``) if sent, else the API key, else the client address, so one
  user sees one model for the whole canary.

Feedback on a champion request also grades the shadow's answer to it (the monitor joins them by
``shadow_of``), so a shadow collects live accuracy without any user ever seeing it.

A classifier challenger is a second, merged model in memory (a served classifier folds its LoRA
weights into the base at load, so there is no shared base left to put two adapters on).

Generation models (``POST /v1/chat/completions`` and ``/v1/completions``) take part the same way.
When the champion is a LoRA adapter and the challenger a LoRA adapter of the same base, the
challenger is loaded onto the champion's own ``Generator`` as a second adapter (named
``tunekit-challenger-<hash>``, not listed by ``GET /v1/models`` and not nameable by clients), so
the base model is in memory once; it comes off again when the deployment ends. Any other
challenger (a full checkpoint, another base) is a model of its own, and must share the champion's
base model id and chat template, since the prompt is encoded once, for the champion. Only requests
for the champion itself take part (a request naming the bare base, or another adapter an admin
loaded with ``/v1/adapters``, is answered as asked). A canary request generates with the
challenger's adapter (``request.arm`` = ``canary``; its row has the challenger's name and version);
a failing non-streamed canary falls back to the champion (counted), a streamed one cannot. The
shadow copy of a request runs with the same decoding options after the answer was returned, for
streams once the stream has ended (a client that hangs up midway leaves no shadow: there is no
whole answer to compare with); its row holds the challenger's text, its output guardrail flags
(flagged, never acted on) and the champion request's input flags. Agreement for generation is the
exact match of the two answer texts; ``tunekit monitor --graders FILE`` grades each shadowed pair
with the evals graders (``monitor.arms.grader_rates``), the champion's answer as the reference.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tunekit import task_kinds
from tunekit.artifacts import Workspace
from tunekit.errors import ConfigError, DataError, ModelError, RegistryError, TunekitError
from tunekit.serve.inputs import RequestError, check_strings
from tunekit.serve.loading import LoadedModel, Loader, resolve_model
from tunekit.serve.schemas import ErrorResponse
from tunekit.serve.settings import ServeSettings

logger = logging.getLogger("tunekit.serve")

STATE_FILE = "deployment.json"
MAX_SHADOW_TASKS = 64  # shadow answers in flight at most; beyond, requests are not shadowed (counted), so a slow challenger cannot pile up work
CHALLENGER_ADAPTER = "tunekit-challenger-"  # prefix of a challenger's adapter on the champion's base (not listed by GET /v1/models)
Mode = Literal["off", "shadow", "canary"]
Arm = Literal["champion", "canary", "shadow"]


class DeploymentState(BaseModel):
    """``WORKSPACE/deployment.json``: how a challenger runs beside the champion."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field("off", description="`off` (the champion answers everything), `shadow` (the challenger answers a copy of every request, logged, never returned) or `canary` (the challenger answers `share` of the callers).")
    challenger: str | None = Field(None, description="The challenger: a registry reference (`NAME/VERSION`, `NAME@challenger`) or a tunekit model directory; required unless `mode` is `off`.")
    share: float = Field(0.1, gt=0, le=1, description="Canary: the share of callers (not requests: the split is sticky per caller) the challenger answers.")
    user_header: str = Field("x-user-id", min_length=1, max_length=100, description="Canary: the request header naming the end user; callers are split by it when sent, else by API key, else by client address.")
    reason: str = Field("", max_length=2000, description="Why the deployment was switched (kept in the file and the audit trail).")
    updated_at: str | None = Field(None, description="When it was switched (ISO 8601, UTC); set on write.")
    updated_by: str | None = Field(None, description="Who switched it; set on write.")

    def check(self) -> DeploymentState:
        if self.mode != "off" and not self.challenger:
            raise ConfigError(f"deployment: mode {self.mode} needs a challenger (a registry reference such as intent/4, or a model folder)")
        return self


def state_path(workspace: Path) -> Path:
    return Workspace(workspace).root / STATE_FILE


def read_state(workspace: Path) -> DeploymentState:
    """The deployment in ``workspace`` (``off`` when there is no file); a broken file is a ``ConfigError`` naming it."""
    path = state_path(workspace)
    if not path.is_file():
        return DeploymentState()
    try:
        return DeploymentState.model_validate_json(path.read_text()).check()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a deployment state ({exc}); fix it or switch again with `tunekit deploy off`") from None


def write_state(workspace: Path, state: DeploymentState, by: str | None = None) -> DeploymentState:
    """Write ``state`` atomically (a reader never sees half a file) with when and who."""
    import getpass

    state = state.model_copy(update={"updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                                     "updated_by": by or os.environ.get("TUNEKIT_USER") or getpass.getuser()}).check()
    path = state_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)
    return state


def bucket(identity: str, salt: str) -> float:
    """A caller's fixed place in [0, 1): the canary answers callers below its share."""
    digest = hashlib.sha256(f"{salt}\0{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Challenger(LoadedModel):
    """A loaded challenger. For a generation challenger that is a LoRA adapter of the champion's base,
    ``model`` is the champion's own ``Generator`` and ``adapter`` the name it was loaded under there
    (one base in memory); otherwise ``model`` is a model of its own and ``adapter`` None."""

    adapter: str | None = None
    shared: bool = False  # an adapter on the champion's Generator (removed from it when the deployment ends)


class Deployment:
    """The server's side of the deployment: the loaded challenger, arm assignment, shadow runs, tallies."""

    def __init__(self, settings: ServeSettings, loader: Loader):
        self.settings, self._loader = settings, loader
        self.state = DeploymentState()
        self.challenger: LoadedModel | None = None
        self.error: str | None = None  # why the challenger of the file could not be loaded
        self.lock = threading.Lock()   # one challenger forward pass at a time
        self._switch = threading.Lock()
        self._mtime: float | None = None
        self._checked: tuple[int, int] | None = None  # the (champion, challenger) pair found compatible
        self._tasks: set[asyncio.Task] = set()
        self.counts = {"champion": 0, "canary": 0, "shadow": 0, "shadow_skipped": 0, "shadow_failed": 0, "canary_failed": 0, "agree": 0, "compared": 0}
        self.latency_ms = {"champion": 0.0, "canary": 0.0, "shadow": 0.0}
        self.slot = None  # the champion's ModelSlot (set by the app): a generation challenger is loaded onto its base
        self.resolve = resolve_model  # (settings) -> (directory, name, version); tests may replace it

    # -- switching ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Apply ``deployment.json`` if it changed since the last look (the watcher calls this)."""
        path = state_path(self.settings.workspace_dir)
        mtime = path.stat().st_mtime if path.is_file() else None
        if mtime == self._mtime:
            return
        if self.slot is not None and self.slot.loaded is None and self.slot.error is None:
            return  # the champion is still loading: a generation challenger goes onto its base, so look again next time
        self._mtime = mtime
        try:
            self.apply(read_state(self.settings.workspace_dir))
        except TunekitError as exc:
            self.error = str(exc)
            logger.error("deployment not applied (still %s): %s", self.state.mode, exc)

    def apply(self, state: DeploymentState, champion: LoadedModel | None = None) -> None:
        """Switch to ``state``, loading its challenger first (this thread; the old one serves meanwhile)."""
        with self._switch:
            if champion is None and self.slot is not None:
                champion = self.slot.loaded
            old = challenger = self.challenger
            if old is not None and old.shared and champion is not None and old.model is not champion.model:
                old = challenger = None  # the champion was swapped (a new alias version): its adapters went with it
            if state.mode == "off":
                challenger = None
            elif challenger is None or challenger.source != state.challenger:
                challenger = self._load(state.challenger, champion)
            try:
                if challenger is not None and champion is not None:
                    _check_compatible(champion, challenger)
            except ModelError:
                if challenger is not old:
                    _unload(challenger)
                raise
            self.state, self.challenger, self.error = state, challenger, None  # two assignments; `arm` reads the challenger first
            if old is not None and old is not challenger:
                _unload(old)
            logger.info("deployment: %s%s", state.mode, f" of {state.challenger}" if challenger else "")

    def _load(self, ref: str, champion: LoadedModel | None) -> Challenger:
        """The challenger ``ref``: a LoRA adapter of a PEFT generation champion's base goes onto the champion's
        ``Generator`` as a second adapter (the base is not loaded twice); anything else is loaded on its own."""
        settings = self.settings.model_copy(update={"model": ref})
        gen = champion.model if champion is not None and task_kinds.kind(champion.task).causal else None
        if gen is not None and gen.adapters:
            from tunekit.models.causal import read_manifest

            path, name, version = self.resolve(settings)
            path = Path(path)
            if (path / "adapter_config.json").is_file():
                info = read_manifest(path)
                if info.base_model.id == gen.base_model:
                    adapter = CHALLENGER_ADAPTER + hashlib.sha256(str(ref).encode()).hexdigest()[:12]
                    if adapter not in gen.adapters:
                        gen.add_adapter(adapter, path)
                    return Challenger(gen, name or info.name, version, ref, adapter=adapter, shared=True)
        loaded = self._loader(settings)
        return Challenger(loaded.model, loaded.name, loaded.version, ref, loaded.created)

    def watch(self, interval_s: float) -> threading.Thread | None:
        """Apply the state file now and then every ``interval_s`` seconds, in a thread (0: never; the
        admin route still switches). The first look is in the thread too: loading a challenger
        must not hold up the server's start."""
        if interval_s <= 0:
            return None
        self._stop = threading.Event()

        def loop() -> None:
            while True:
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a bad file or a failed load must not end the watcher
                    logger.exception("checking the deployment state failed")
                if self._stop.wait(interval_s):
                    return

        thread = threading.Thread(target=loop, name="tunekit-deployment-watcher", daemon=True)
        thread.start()
        return thread

    async def stop(self) -> None:
        if getattr(self, "_stop", None) is not None:
            self._stop.set()
        if self._tasks:  # shadow answers still running: let them log
            await asyncio.wait(list(self._tasks), timeout=self.settings.request_timeout_s)

    # -- serving -----------------------------------------------------------------------------------

    def active(self, champion: LoadedModel) -> LoadedModel | None:
        """The challenger, unless there is none, it has become the champion (promoted: the deployment
        is over), or it cannot answer this champion's requests (checked once per pair; ``error`` says why)."""
        challenger = self.challenger
        if challenger is None or (challenger.name, challenger.version) == (champion.name, champion.version):
            return None
        if challenger.shared and challenger.model is not champion.model:  # a new champion version was swapped in
            self.error, self.challenger, self._mtime = ("the champion changed: the challenger adapter goes onto the new one at the watcher's "
                                                        "next look at deployment.json (or PUT /v1/deployment again)"), None, None
            return None
        pair = (id(champion), id(challenger))
        if self._checked != pair:
            try:
                _check_compatible(champion, challenger)
            except ModelError as exc:
                self.error, self.challenger = str(exc), None
                logger.error("deployment: challenger dropped: %s", exc)
                return None
            self._checked = pair
        return challenger

    def arm(self, http: Request, key_id: str | None, champion: LoadedModel) -> tuple[Arm, LoadedModel]:
        """Which arm answers this request, and with which model."""
        challenger, state = self.active(champion), self.state
        if challenger is None or state.mode != "canary":
            return "champion", champion
        identity = http.headers.get(state.user_header) or (f"key:{key_id}" if key_id else f"addr:{http.client.host if http.client else 'local'}")
        if bucket(identity, state.challenger or "") < state.share:
            return "canary", challenger
        return "champion", champion

    def predict(self, model: LoadedModel, rows: list[tuple[str, str | None]]) -> list:
        """The challenger's raw outputs for ``rows`` (probabilities, or values for regression), under its own lock."""
        texts = [t for t, _ in rows]
        pairs = [p for _, p in rows] if rows and rows[0][1] is not None else None
        with self.lock:
            if task_kinds.kind(model.task).numeric:
                return list(model.model.predict(texts, pairs, 8))
            return list(model.model.predict_proba(texts, pairs, 8))

    def observe(self, arm: str, latency_ms: float) -> None:
        self.counts[arm] += 1
        self.latency_ms[arm] += latency_ms

    def shadow(self, runtime, rec, route: str, rows: list, champion: LoadedModel, respond: Callable[[LoadedModel, list], list]) -> None:
        """In shadow mode, answer ``rows`` with the challenger in the background and log it beside ``rec``."""
        challenger = self.active(champion)
        if challenger is None or self.state.mode != "shadow" or runtime.log is None:
            return
        if len(self._tasks) >= MAX_SHADOW_TASKS:
            self.counts["shadow_skipped"] += 1
            return
        async def answer() -> tuple[list, dict]:
            return respond(challenger, await run_in_threadpool(self.predict, challenger, rows)), {}

        self._spawn(self._shadow(runtime, rec, route, challenger, answer))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, runtime, rec, route: str, challenger: LoadedModel, answer: Callable, flags: Callable | None = None) -> None:
        """Run ``answer()`` (the challenger's response and extra log fields), log it as the shadow row of ``rec``."""
        started = time.perf_counter()
        try:
            response, extra = await answer()
            latency = (time.perf_counter() - started) * 1000
            request = {k: v for k, v in (rec.request or {}).items() if k != "arm"} | {"arm": "shadow", "shadow_of": rec.id}
            row = {"id": f"{rec.id}-shadow", "route": route, "model": challenger.name, "version": challenger.version, "status": 200,
                   "latency_ms": round(latency, 2), "key_id": rec.key_id, "request": request, "response": response, "flags": []} | extra
            await run_in_threadpool(runtime.log.log, row)
            self.observe("shadow", latency)
            self._compare(rec.response, response)
        except Exception:  # noqa: BLE001 - the client has its answer; a shadow failure is only counted and logged
            self.counts["shadow_failed"] += 1
            logger.exception("shadow answer for request %s failed", rec.id)

    def _compare(self, champion_answer, shadow_answer) -> None:
        """Running agreement: same label (classification), the same value to 4 places (regression), the
        same text exactly (generation)."""
        if not isinstance(champion_answer, list) or len(champion_answer) != len(shadow_answer):
            return
        for a, b in zip(champion_answer, shadow_answer):
            key = "text" if isinstance(a, dict) and "text" in a else "label"
            same = a.get(key) == b.get(key) if isinstance(a, dict) else round(float(a), 4) == round(float(b), 4)
            self.counts["compared"] += 1
            self.counts["agree"] += bool(same)

    # -- generation --------------------------------------------------------------------------------

    def generation(self, http: Request, rec, champion: LoadedModel, adapter: str | None, options: dict) -> GenerationCall:
        """The arm of one chat or completions request: the decoding ``options`` it generates with (the
        champion's, or in a canary the challenger's generator and adapter), and the options of its shadow
        copy. Only requests for the champion itself take part: one naming the bare base, or another
        adapter an admin loaded, is answered as asked."""
        challenger = self.active(champion)
        own = adapter is None or adapter == next(iter(champion.model.adapters), None)
        if challenger is None or not own:
            return GenerationCall(self, None, options, champion)
        theirs = options | {"generator": challenger.model, "adapter": challenger.adapter}
        arm, _ = self.arm(http, rec.key_id, champion)
        rec.request["arm"] = arm
        if arm == "canary":
            rec.model, rec.version, rec.adapter = challenger.name, challenger.version, challenger.adapter
            return GenerationCall(self, arm, theirs, champion, fallback=options, challenger=challenger)
        return GenerationCall(self, arm, options, champion, shadow=theirs if self.state.mode == "shadow" else None, challenger=challenger)

    def push_gauges(self, metrics) -> None:
        """Per-arm live tallies as gauges on ``/metrics`` (since the server started)."""
        mode = {"mode": self.state.mode}
        metrics.set_gauge("tunekit_deployment_mode", 1.0, "The deployment mode now (label `mode`); always 1.", mode)
        for arm in ("champion", "canary", "shadow"):
            n = self.counts[arm]
            metrics.set_gauge("tunekit_arm_requests", n, "Requests answered per arm since the server started (shadow: answered in the background).", {"arm": arm})
            if n:
                metrics.set_gauge("tunekit_arm_latency_ms_mean", self.latency_ms[arm] / n, "Mean model latency per arm (ms) since the server started.", {"arm": arm})
        metrics.set_gauge("tunekit_shadow_skipped", self.counts["shadow_skipped"], "Requests not shadowed because too many shadow answers were in flight.")
        metrics.set_gauge("tunekit_shadow_failed", self.counts["shadow_failed"], "Shadow answers that failed (the client's request was not affected).")
        metrics.set_gauge("tunekit_canary_failed", self.counts["canary_failed"], "Canary answers that failed; the champion answered instead.")
        if self.counts["compared"]:
            metrics.set_gauge("tunekit_shadow_agreement", self.counts["agree"] / self.counts["compared"],
                              "Share of shadowed inputs where the challenger's answer equals the champion's.")

    def describe(self) -> DeploymentInfo:
        c = self.challenger
        return DeploymentInfo(**self.state.model_dump(), challenger_name=c.name if c else None, challenger_version=c.version if c else None,
                              error=self.error, counts=dict(self.counts))


class GenerationCall:
    """One generation request under a deployment (``arm`` None: no deployment applies to it)."""

    def __init__(self, deployment: Deployment, arm: str | None, options: dict, champion: LoadedModel, fallback: dict | None = None,
                 shadow: dict | None = None, challenger: Challenger | None = None):
        self.deployment, self.arm, self.options, self.champion = deployment, arm, options, champion
        self._fallback, self._shadow, self.challenger = fallback, shadow, challenger
        self.started = time.perf_counter()

    @property
    def generator(self):
        return self.options["generator"]

    async def generate(self, runtime, prompts: list[list[int]]) -> list:
        """The answers to ``prompts``; a failing canary's caller is answered by the champion (counted, logged)."""
        try:
            answers = await runtime.generate(prompts, self.options)
        except Exception:
            if self.arm != "canary":
                raise
            logger.exception("canary %s v%s failed; the champion answers", self.challenger.name, self.challenger.version)
            self.deployment.counts["canary_failed"] += 1
            self.arm, self.options = "champion", self._fallback
            answers = await runtime.generate(prompts, self.options)
        return answers

    def done(self, runtime, rec, route: str, prompts: list[list[int]], context: str | None = None) -> None:
        """The answer has been made: count it for its arm and, in shadow mode, answer a copy with the challenger in the background."""
        if self.arm is None:
            return
        if rec.request.get("arm") != self.arm:  # the canary failed over to the champion
            rec.request["arm"] = self.arm
            rec.model, rec.version, rec.adapter = self.champion.name, self.champion.version, self.options.get("adapter")
        self.deployment.observe(self.arm, (time.perf_counter() - self.started) * 1000)
        dep, options, challenger = self.deployment, self._shadow, self.challenger
        if options is None or runtime.log is None:
            return
        if len(dep._tasks) >= MAX_SHADOW_TASKS:
            dep.counts["shadow_skipped"] += 1
            return

        async def answer() -> tuple[list, dict]:
            answers = await runtime.generate(prompts, options)
            checked = [await run_in_threadpool(runtime.guardrails.check_output, a.text, context) for a in answers]
            flags = [f.to_json() for f in rec.flags if f.where == "input"] + [f.to_json() for _, fs in checked for f in fs]
            return ([{"text": a.text, "finish_reason": a.finish_reason} for a in answers],
                    {"adapter": challenger.adapter, "flags": flags, "prompt_tokens": sum(a.prompt_tokens for a in answers),
                     "completion_tokens": sum(a.completion_tokens for a in answers)})

        dep._spawn(dep._shadow(runtime, rec, route, challenger, answer))

    async def stream(self, chunks: AsyncIterator[dict], runtime, rec, route: str, prompts: list[list[int]],
                     context: str | None = None) -> AsyncIterator[dict]:
        """``chunks`` passed through; once the stream has ended (and logged itself) the shadow copy starts.
        A client that hangs up midway gets no shadow (there is no whole answer to compare with)."""
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
        self.done(runtime, rec, route, prompts, context)


class DeploymentInfo(DeploymentState):
    """``GET /v1/deployment``: the state, what is loaded, and the tallies since the server started."""

    challenger_name: str | None = Field(None, description="Name of the loaded challenger.")
    challenger_version: str | None = Field(None, description="Its registry version (null for a folder).")
    error: str | None = Field(None, description="Why the state file's challenger could not be loaded, if it could not.")
    counts: dict[str, int] = Field(default_factory=dict, description="Requests per arm, shadow answers skipped or failed, inputs compared and agreed.")


class DeploymentRequest(BaseModel):
    """``PUT /v1/deployment``."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(..., description="`off`, `shadow` or `canary`.")
    challenger: str | None = Field(None, max_length=1000, description="Registry reference or model folder; required unless `mode` is `off`.")
    share: float = Field(0.1, gt=0, le=1, description="Canary: share of callers answered by the challenger.")
    user_header: str = Field("x-user-id", min_length=1, max_length=100, description="Canary: header naming the end user (sticky split).")
    reason: str = Field("", max_length=2000, description="Why (kept with the state).")


def install(app: FastAPI, deployment: Deployment, slot, runtime, admin) -> None:
    """``GET`` and ``PUT /v1/deployment`` (admin scope)."""
    router = APIRouter()
    errors = {s: {"model": ErrorResponse} for s in (401, 403, 404, 409, 422, 503)}

    @router.get("/v1/deployment", response_model=DeploymentInfo, summary="Shadow or canary deployment now (admin)", dependencies=[admin])
    async def get_deployment() -> DeploymentInfo:
        return deployment.describe()

    @router.put("/v1/deployment", response_model=DeploymentInfo, responses=errors, summary="Switch shadow / canary / off (admin)",
                dependencies=[admin])
    async def put_deployment(body: DeploymentRequest, http: Request) -> DeploymentInfo:
        check_strings(body.model_dump(), "")
        if body.mode != "off" and not body.challenger:
            raise RequestError(f"challenger: mode {body.mode} needs a challenger (a registry reference such as intent/4, or a model folder)",
                               "challenger_required", "challenger", 422)
        champion = slot.require()
        state = DeploymentState(**body.model_dump())
        try:
            await runtime.within_timeout(run_in_threadpool(deployment.apply, state, champion))
        except (ConfigError, DataError, ModelError, RegistryError) as exc:  # the challenger the admin named cannot serve beside this champion
            raise RequestError(f"challenger: {exc}", "invalid_challenger", "challenger", 422) from None
        who = getattr(http.state, "key", None)
        await run_in_threadpool(write_state, deployment.settings.workspace_dir, state, f"key:{who.key_id}" if who else None)
        deployment._mtime = state_path(deployment.settings.workspace_dir).stat().st_mtime  # our own write: no reload by the watcher
        return deployment.describe()

    app.include_router(router)


def _check_compatible(champion: LoadedModel, challenger: LoadedModel) -> None:
    """The challenger answers the champion's requests, so it must do the same task on the same kind of input."""
    if challenger.task != champion.task:
        raise ModelError(f"{challenger.source} is a {challenger.task} model; the champion {champion.name} is {champion.task}")
    if challenger.expects_pairs != champion.expects_pairs:
        raise ModelError(f"{challenger.source} {'reads' if challenger.expects_pairs else 'does not read'} sentence pairs; the champion "
                         f"{'does' if champion.expects_pairs else 'does not'}")
    if task_kinds.kind(champion.task).causal and challenger.model is not champion.model:
        ours, theirs = champion.model, challenger.model  # the prompt is encoded once, with the champion's tokenizer and template
        if theirs.base_model != ours.base_model or theirs.template.source != ours.template.source:
            raise ModelError(f"{challenger.source} is built on {theirs.base_model!r} with the {theirs.template.name} template; the champion "
                             f"{champion.name} on {ours.base_model!r} with {ours.template.name}: a prompt would be encoded for the wrong model")
    if (challenger.name, challenger.version) == (champion.name, champion.version) and challenger.version is not None:
        raise ModelError(f"{challenger.source} is the champion itself ({champion.name} v{champion.version}); name another version")
    if getattr(challenger.model.info, "tasks", None) != getattr(champion.model.info, "tasks", None):
        raise ModelError(f"{challenger.source} has other tasks than the champion {champion.name}")


def _unload(challenger: Challenger | None) -> None:
    """Free a challenger that no longer runs: its adapter comes off the champion's base (a model of its own is left to the GC)."""
    if challenger is None or not challenger.shared:
        return
    gen = challenger.model
    if challenger.adapter in gen.adapters:
        try:
            gen.remove_adapter(challenger.adapter)
        except (ModelError, KeyError, ValueError):
            logger.exception("unloading the challenger adapter %s failed", challenger.adapter)
