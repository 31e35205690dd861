"""Serve stage: a FastAPI server for a trained tunekit model.

``create_app(settings)`` builds the app (``/healthz``, ``/readyz``, docs at ``/docs``; for a
classification model ``POST /v1/classify``; for a generation model OpenAI's ``POST
/v1/chat/completions``, ``POST /v1/completions`` and ``GET /v1/models``); ``serve(settings)`` runs
it with uvicorn. The model is a registry reference (``NAME@ALIAS``, ``NAME/VERSION``) or a model
directory, loaded in the background at start-up.
"""

from __future__ import annotations

from tunekit.serve.app import create_app, serve
from tunekit.serve.loading import LoadedModel, default_loader
from tunekit.serve.settings import ServeSettings

__all__ = ["LoadedModel", "ServeSettings", "create_app", "default_loader", "serve"]
