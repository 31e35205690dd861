"""Serve stage: a FastAPI server that classifies texts with a trained tunekit model.

``create_app(settings)`` builds the app (``/healthz``, ``/readyz``, ``POST /v1/classify``, docs at
``/docs``); ``serve(settings)`` runs it with uvicorn. The model is a registry reference
(``NAME@ALIAS``, ``NAME/VERSION``) or a model directory, loaded in the background at start-up.
"""

from __future__ import annotations

from tunekit.serve.app import create_app, serve
from tunekit.serve.loading import LoadedModel, default_loader
from tunekit.serve.settings import ServeSettings

__all__ = ["LoadedModel", "ServeSettings", "create_app", "default_loader", "serve"]
