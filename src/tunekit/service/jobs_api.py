"""OpenAI's fine-tuning routes (``/v1/fine_tuning/jobs``), over the job store and the queue.

Creating a job checks everything a client sent before anything is queued, each problem a 400 naming
its parameter: the base model is in the catalogue, the files are this project's and of a format the
method trains on, the hyperparameters are ``"auto"`` or in range, the suffix fits in a model id.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tunekit.errors import Conflict, NotFound
from tunekit.serve.keys import KeyInfo, project_of
from tunekit.service.catalogue import Catalogue
from tunekit.service.jobs import HYPERPARAMETERS, JobInvalid, JobStore, resolve_hyperparameters
from tunekit.service.queue import enqueue

__all__ = ["router"]

SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
TRAINS_ON = {"supervised": ("chat", "prompt_completion"), "dpo": ("preference",)}


class MethodBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field("supervised", description="`supervised` (chat or prompt/completion files) or `dpo` (preference files); `reinforcement` is refused.")


class JobCreate(BaseModel):
    """The body of ``POST /v1/fine_tuning/jobs``, as OpenAI's client sends it."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., description="A base model of the catalogue (`GET /v1/models` lists them).")
    training_file: str = Field(..., description="A file of purpose `fine-tune` (`POST /v1/files`).")
    validation_file: str | None = Field(None, description="Validation rows; default: 10% of the training rows are held out.")
    hyperparameters: dict[str, Any] | None = Field(None, description="Deprecated by OpenAI in favour of `method`; still honoured.")
    method: MethodBody | None = None
    suffix: str | None = Field(None, description="Up to 64 letters, digits, `_` or `-`, put into the fine-tuned model's id.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Seed of the split, the initialisation and the data order.")
    metadata: dict[str, str] | None = Field(None, description="Up to 16 key-value pairs, returned with the job and usable as a list filter.")
    integrations: list[dict[str, Any]] | None = Field(None, description="Not supported (Weights & Biases): refused when not empty.")


def router(jobs: JobStore, files, catalogue: Catalogue, queue, require) -> APIRouter:
    """The routes; ``files`` is the ``FileStore``, ``queue`` the huey queue, ``require`` ``Runtime.require``."""
    api = APIRouter(tags=["Fine-tuning"])
    fine_tune = require("fine-tune")

    @api.post("/v1/fine_tuning/jobs", summary="Create a fine-tuning job")
    def create(body: JobCreate, key: KeyInfo | None = fine_tune) -> dict:
        project = project_of(key)
        method = body.method.type if body.method else "supervised"
        if method not in TRAINS_ON:
            raise JobInvalid(f"method.type: {method!r} is not supported; this server runs `supervised` and `dpo` fine-tuning "
                             "(reinforcement fine-tuning needs a grader-driven RL loop tunekit does not have)", param="method.type")
        if body.integrations:
            raise JobInvalid("integrations: not supported; job metrics are in the job's events, checkpoints and result file", param="integrations")
        if body.suffix is not None and not SUFFIX.fullmatch(body.suffix):
            raise JobInvalid(f"suffix: {body.suffix!r} must be 1-64 letters, digits, '_' or '-'", param="suffix")
        if body.metadata and len(body.metadata) > 16:
            raise JobInvalid(f"metadata: {len(body.metadata)} keys, at most 16", param="metadata")
        catalogue.get(body.model)
        for param in ("training_file", "validation_file"):
            file_id = getattr(body, param)
            if file_id is None:
                continue
            try:
                found, kind = files.get(project, file_id), files.format(project, file_id)
            except NotFound:
                raise JobInvalid(f"{param}: no file {file_id!r} in this project; upload it with POST /v1/files (purpose fine-tune)",
                                 param=param) from None
            if found["purpose"] != "fine-tune" or kind not in TRAINS_ON[method]:
                raise JobInvalid(f"{param}: {file_id} holds {kind} rows (purpose {found['purpose']}); `{method}` fine-tuning trains on a "
                                 f"fine-tune file of {' or '.join(TRAINS_ON[method])} rows", param=param)
        sent = dict(body.hyperparameters or {})
        if body.method is not None:
            sent.update((getattr(body.method, method, None) or {}).get("hyperparameters") or {})
        resolve_hyperparameters(sent, examples=10, method=method)  # ranges now; "auto" is resolved when the job starts
        hyper = {k: sent.get(k, "auto") for k in HYPERPARAMETERS[method]}
        job = jobs.create(project, model=body.model, training_file=body.training_file, validation_file=body.validation_file,
                          hyperparameters=hyper, method={"type": method}, suffix=body.suffix, seed=body.seed, metadata=body.metadata)
        jobs.event(job.id, f"Created fine-tuning job: {job.id}")
        jobs.event(job.id, f"Validating training file: {body.training_file}" + (f" and validation file: {body.validation_file}" if body.validation_file else ""))
        jobs.set(job.id, status="queued")
        jobs.event(job.id, "Files validated, moving job to queued state")
        enqueue(queue, job.id)
        return jobs.get(project, job.id).to_openai()

    @api.get("/v1/fine_tuning/jobs", summary="List fine-tuning jobs, newest first")
    def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                  key: KeyInfo | None = fine_tune) -> dict:
        wanted = {k[len("metadata["):-1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")}
        found, more = jobs.list(project_of(key), after, limit, wanted or None)
        return {"object": "list", "data": [j.to_openai() for j in found], "has_more": more}

    @api.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}", summary="Retrieve a fine-tuning job")
    def retrieve(fine_tuning_job_id: str, key: KeyInfo | None = fine_tune) -> dict:
        return jobs.get(project_of(key), fine_tuning_job_id).to_openai()

    @api.post("/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel", summary="Cancel a fine-tuning job")
    def cancel(fine_tuning_job_id: str, key: KeyInfo | None = fine_tune) -> dict:
        return jobs.request(project_of(key), fine_tuning_job_id, "cancel").to_openai()

    @api.post("/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause", summary="Pause a fine-tuning job (it stops at its next step)")
    def pause(fine_tuning_job_id: str, key: KeyInfo | None = fine_tune) -> dict:
        return jobs.request(project_of(key), fine_tuning_job_id, "pause").to_openai()

    @api.post("/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume", summary="Resume a paused job from its last checkpoint")
    def resume(fine_tuning_job_id: str, key: KeyInfo | None = fine_tune) -> dict:
        project = project_of(key)
        job = jobs.get(project, fine_tuning_job_id)
        if job.status != "paused" or not jobs.requeue(job.id, "paused"):
            raise Conflict(f"job {job.id} is {job.status}; only a paused job can be resumed")
        jobs.event(job.id, "Job resumed; queued")
        enqueue(queue, job.id)
        return jobs.get(project, job.id).to_openai()

    @api.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", summary="A job's events, newest first")
    def events(fine_tuning_job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000),
               key: KeyInfo | None = fine_tune) -> dict:
        data, more = jobs.events(project_of(key), fine_tuning_job_id, after, limit)
        return {"object": "list", "data": data, "has_more": more}

    @api.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", summary="A job's checkpoints (one per epoch), newest first")
    def checkpoints(fine_tuning_job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=100),
                    key: KeyInfo | None = fine_tune) -> dict:
        data, more = jobs.checkpoints(project_of(key), fine_tuning_job_id, after, limit)
        return {"object": "list", "data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    return api

