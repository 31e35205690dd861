"""The web console at ``/ui``: runs, models, jobs, evals, production and a playground, in one place.

``install(app, settings, runtime)`` mounts it on a service app (``tunekit serve`` without
``--model``, and ``tunekit ui``, which is that app over a local workspace). It is a client of what is
already there: the service's HTTP API (files, fine-tuning jobs, evals, chat) with the signed-in key,
and for what has no API, the workspace's own readers (report cards, the registry, the request log,
monitor reports). Modules:

    session   sign-in with an API key, the HttpOnly session cookie, CSRF tokens, scopes
    web       templates, security headers (CSP), the in-process API client, the page decorator
    views     runs, registry and production data for the pages
    pages     the HTML routes; promote and roll back behind a confirmation
    api       the API forwarded to the page's script; static assets (plotly.js from the installed package)
"""

from __future__ import annotations

from fastapi import FastAPI

from tunekit.artifacts import Workspace
from tunekit.ui import api, pages
from tunekit.ui.session import Sessions
from tunekit.ui.web import Console

__all__ = ["PREFIX", "install"]

PREFIX = "/ui"


def install(app: FastAPI, settings, runtime, tracking_uri: str | None = None) -> Console:
    """Mount the console on ``app`` (a service app); the registry is the workspace's unless ``tracking_uri``."""
    workspace = Workspace(settings.workspace_dir)
    console = Console(Sessions(runtime.keys), workspace, tracking_uri or workspace.tracking_uri, PREFIX, settings.max_new_tokens)
    app.include_router(pages.router(console, runtime))
    app.include_router(api.router(console))
    app.state.console = console
    return console
