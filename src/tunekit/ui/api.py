"""The console's script-facing routes: the service API, forwarded with the signed-in key, and the
static assets (the console's own script and style, and plotly.js with its CSS from the installed ``plotly`` package).

``/ui/api/v1/...`` exists because the page's script never holds the key (``session``): it calls here
with its session cookie and CSRF token, and this forwards the call to ``/v1/...`` with the key. Only
the API families the console uses are forwarded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from tunekit.errors import AuthError, NotFound, TunekitError
from tunekit.ui.charts import plotly_css, plotly_js
from tunekit.ui.web import Console, json_error, secure

__all__ = ["FORWARDED", "router"]

FORWARDED = ("files", "fine_tuning/jobs", "evals", "models", "chat/completions")
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
ASSET_CACHE = "public, max-age=3600"


def router(console: Console) -> APIRouter:
    ui = APIRouter(include_in_schema=False)
    p = console.prefix

    @ui.api_route(p + "/api/v1/{path:path}", methods=["GET", "POST", "DELETE"])
    async def forward(request: Request, path: str) -> Response:
        try:
            session = console.sessions.get(request) or (console.sessions.sign_in("") if not console.sessions.auth else None)
            if session is None:
                raise AuthError("not signed in, or the session ended (a restart or a revoked key): reload the page to sign in again")
            if not any(path == family or path.startswith(family + "/") for family in FORWARDED):
                raise NotFound(f"/v1/{path} is not an API the console forwards (it forwards {', '.join(FORWARDED)})")
            if request.method != "GET":
                console.csrf(session, request)
        except TunekitError as exc:
            return json_error(exc)
        headers = {k: v for k, v in request.headers.items() if k in ("content-type", "accept")}
        answer = await console.call_api(request, session, request.method, f"/v1/{path}", params=request.query_params,
                                        content=await request.body(), headers=headers)
        response = Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))
        for name in ("retry-after", "x-request-id"):
            if name in answer.headers:
                response.headers[name] = answer.headers[name]
        return secure(response)

    @ui.get(p + "/static/{name}")
    async def static(name: str) -> Response:
        if name == "plotly.css":
            response = secure(Response(plotly_css(), media_type="text/css"))
            response.headers["Cache-Control"] = ASSET_CACHE
            return response
        if name == "plotly.min.js":
            path, media = plotly_js(), "text/javascript"
        elif name in STATIC:
            path, media = Path(str(resources.files("tunekit.ui") / "static" / name)), STATIC[name]
        else:
            return json_error(NotFound(f"no console asset {name!r}"))
        response = secure(FileResponse(path, media_type=media))
        response.headers["Cache-Control"] = ASSET_CACHE
        return response

    return ui
