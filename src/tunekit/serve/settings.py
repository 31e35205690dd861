"""Settings of the server: which model to serve, where, and the request limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """How ``tunekit serve`` runs. Each field is also a CLI option (``max_inputs`` is ``--max-inputs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(..., description="Model to serve: a registry reference (`NAME@ALIAS`, e.g. `intent@champion`, or `NAME/VERSION`) or the path of a tunekit model directory.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI used to resolve registry references. Default: the registry's own default.")
    host: str = Field("127.0.0.1", description="Interface to listen on; `0.0.0.0` listens on every interface.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    max_inputs: int = Field(64, ge=1, description="Most texts (or text pairs) one request may send; more are answered with 413.")
    max_chars: int = Field(10_000, ge=1, description="Most characters in one text; a longer text is answered with 413.")
    batch_size: int = Field(32, ge=1, description="Rows per forward pass of the model.")
    max_new_tokens: int = Field(512, ge=1, description="Generation models: most tokens one request may ask for (`max_tokens`, `max_completion_tokens`); more is answered with 400. Also the default for a chat request that names no limit.")
    device: str = Field("cpu", description="Where the model runs: `cpu`, `cuda`, `cuda:1`, `mps` or `auto`.")
