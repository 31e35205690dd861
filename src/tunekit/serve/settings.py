"""Settings of the server: which model to serve, where, who may call it, and the request limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tunekit.artifacts import DEFAULT_WORKSPACE
from tunekit.config import settings_from_yaml
from tunekit.serve.guardrails import GuardrailsConfig


class ServeSettings(BaseModel):
    """How ``tunekit serve`` runs. Each top-level field is also a CLI option (``max_inputs`` is
    ``--max-inputs``); all of them, ``guardrails`` included, can come from a YAML file (``--config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="Model to serve: a registry reference (`NAME@ALIAS`, e.g. `intent@champion`, or `NAME/VERSION`) or the path of a tunekit model directory. Left out: service mode (OpenAI's files, fine-tuning jobs and evals, and chat with every fine-tuned model).")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI used to resolve registry references. Default: the registry's own default.")
    host: str = Field("127.0.0.1", description="Interface to listen on; `0.0.0.0` listens on every interface.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    workspace: str = Field(DEFAULT_WORKSPACE, description="Folder of `keys.db` (API keys) and `serving.db` (request log and feedback).")
    auth: bool = Field(True, description="Require an API key (`Authorization: Bearer KEY` or `x-api-key: KEY`, made with `tunekit keys create`). Turn off only for local use (`--no-auth`); the server says so at start.")
    rate_limit_per_minute: float = Field(600, ge=0, description="Requests per minute per API key (per client address without auth); more get 429 with `Retry-After`. 0 turns the limit off.")
    rate_limit_burst: int | None = Field(None, ge=1, description="Requests a key may send at once before the per-minute rate applies. Default: one minute's worth.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest request body, counted as it arrives whatever the headers say; a larger one is answered with 413.")
    body_timeout_s: float = Field(30.0, gt=0, description="A request body that has not fully arrived after this many seconds is answered with 408.")
    auth_failures_per_minute: float = Field(30, ge=0, description="Failed authentications (401) per minute per client address; past them the client gets 429 with `Retry-After`, before any key is checked. 0 turns the limit off.")
    max_inputs: int = Field(64, ge=1, description="Most texts (or text pairs) one request may send; more are answered with 413.")
    max_chars: int = Field(10_000, ge=1, description="Most characters in one text; a longer text is answered with 413.")
    max_input_tokens: int = Field(4096, ge=1, description="Generation models: most prompt tokens in one request; more are answered with 400 (`context_length_exceeded`).")
    max_new_tokens: int = Field(512, ge=1, description="Generation models: most tokens one request may ask for (`max_tokens`, `max_completion_tokens`); more is answered with 400. Also the default for a chat request that names no limit.")
    request_timeout_s: float = Field(60.0, gt=0, description="A request still waiting for the model after this many seconds is answered with 504.")
    batch_size: int = Field(32, ge=1, description="Most rows in one forward pass: concurrent requests are micro-batched up to this.")
    max_wait_ms: float = Field(2.0, ge=0, description="How long a request that arrives while the model is idle waits for others to join its micro-batch; requests that arrive while a batch runs go into the next one as soon as it ends.")
    concurrent_batches: int | None = Field(None, ge=1, le=64, description="Classification and regression: micro-batches that may run at once, each in its own thread. Default: 1 for runtime `torch` (one forward pass already uses every thread); 2 for runtime `onnx`, each ONNX Runtime pass then getting half the threads (an int8 pass over a few rows uses more than one core poorly, so two at once answer more).")
    reload_interval_s: float = Field(30.0, ge=0, description="For an alias reference (`NAME@champion`): how often to check the registry and swap in a newly promoted version without a restart; 0 never checks (`POST /v1/reload` still does).")
    deployment_poll_s: float = Field(2.0, ge=0, description="How often to look at `WORKSPACE/deployment.json` (written by `tunekit deploy` and `tunekit monitor --decide`) and switch a shadow or canary challenger without a restart; 0 never looks (`PUT /v1/deployment` still switches).")
    log_requests: bool = Field(True, description="Log every request and response (PII-redacted unless `guardrails.redact_logs` is false) to `serving.db`.")
    durable_log: bool = Field(False, description="Commit each logged request before answering (no loss even on `kill -9`, at the cost of a disk sync per request).")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="Generation models: `transformers` (tunekit's server, everything on this page) or `vllm` (vLLM's OpenAI server with the adapter loaded through its LoRA support; CUDA only, `pip install vllm`; auth by vLLM's single `$VLLM_API_KEY`, no tunekit guardrails or request log).")
    device: str = Field("cpu", description="Where the model runs: `cpu`, `cuda`, `cuda:1`, `mps` or `auto`.")
    runtime: Literal["torch", "onnx"] = Field("torch", description="Classification and regression models: `torch` (the PyTorch model, as evaluated) or `onnx` (its ONNX Runtime export, int8 by default, on the CPU: written beside the model by `tunekit export MODEL --format onnx`, which checks it against the PyTorch model on the frozen test split). Same tokenisation, labels, temperature and answers' shape either way.")
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig, description="Input and output guardrails.")
    workers: int = Field(1, ge=0, le=16, description="Service mode: job worker processes the server starts beside itself, each running one job at a time; 0 when workers run elsewhere (`tunekit worker`).")
    max_file_bytes: int = Field(512 * 2**20, ge=1, description="Service mode: the largest file `POST /v1/files` takes; a larger one is answered with 413.")
    stale_after_s: float = Field(60.0, gt=0, description="Service mode: a running job whose worker has not written a heartbeat for this long is taken to have died, and is queued again to continue from its last checkpoint.")
    allow_python_graders: bool = Field(False, description="Service mode: let evals use `python` graders (run in a separate process with time and memory limits). Off: such an eval is refused with 400.")

    @model_validator(mode="after")
    def _runtime(self) -> ServeSettings:
        if self.runtime == "onnx" and self.device != "cpu":
            raise ValueError(f"runtime `onnx` runs on the CPU (ONNX Runtime's CPU provider), but device is {self.device!r}; "
                             "use device `cpu`, or runtime `torch` on the accelerator")
        if self.runtime == "onnx" and self.backend == "vllm":
            raise ValueError("runtime `onnx` serves encoder classifiers and regressors; backend `vllm` serves generation models: choose one")
        return self

    @property
    def forward_concurrency(self) -> int:
        """``concurrent_batches``, or its default for the runtime (1 for torch, 2 for onnx)."""
        return self.concurrent_batches or (2 if self.runtime == "onnx" else 1)

    @property
    def workspace_dir(self) -> Path:
        return Path(self.workspace).expanduser()


def load_settings(path: str | Path | None, **overrides) -> ServeSettings:
    """Settings from a YAML file (if given) with ``overrides`` (CLI options that were set) on top."""
    return settings_from_yaml(ServeSettings, path, "server", overrides)
