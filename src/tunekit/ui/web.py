"""What every console route shares: the templates (autoescaped), the security headers, the signed-in
session (or a redirect to sign in), CSRF checks, and calls into the service's own HTTP API.

Why the console calls the API in-process instead of the stores: the files, jobs, evals and chat
routes already check everything a client sends (file lines, hyperparameter ranges, catalogue names,
project scoping, rate limits, the request log). The console forwards to them with the signed-in key
(``call_api``), so it can never accept what the API refuses, and its errors are the API's messages.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from importlib import resources
from typing import Any

import httpx
import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tunekit.errors import ServingError, TunekitError
from tunekit.ui.charts import preset_style_ids
from tunekit.ui.session import COOKIE, Session, Sessions, check_csrf

__all__ = ["CARD_CSP", "CSP", "ApiFailed", "Console", "api_message", "json_error", "pages", "secure", "set_session_cookie"]

# No inline script or style anywhere: a <script> smuggled into a page by user data would not run even if
# escaping failed. Plotly sets styles through the CSSOM, which style-src does not govern.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
       "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
# A report card is a self-contained HTML file with inline CSS and data: images: it gets no script at all, in a sandbox.
CARD_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "SAMEORIGIN",
           "Cache-Control": "no-store"}


class ApiFailed(ServingError):
    """An error answer of the service's API, passed on with its status and message."""


class Console:
    """The console's shared state, made once per app by ``tunekit.ui.install``."""

    def __init__(self, sessions: Sessions, workspace, tracking_uri: str, prefix: str = "/ui", max_new_tokens: int = 512):
        self.sessions, self.workspace, self.tracking_uri, self.prefix = sessions, workspace, tracking_uri, prefix
        self.max_new_tokens = max_new_tokens  # the server's limit: the playground's default and most tokens per answer
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resources.files("tunekit.ui") / "templates")),
                                      autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["num"] = _num
        self.env.filters["when"] = _when
        self.env.filters["pretty"] = _pretty  # JSON for reading (autoescaped like any text); `tojson` is for <script type=application/json>

    # -- answers -----------------------------------------------------------------------------------

    def page(self, request: Request, template: str, session: Session | None, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            prefix=self.prefix, session=session, csrf=session.csrf if session else "", auth=self.sessions.auth,
            path=request.url.path, plotly_ids=preset_style_ids(), **context)
        return secure(HTMLResponse(html, status_code=status))

    def error_page(self, request: Request, session: Session | None, exc: TunekitError) -> HTMLResponse:
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        return self.page(request, "error.html", session, status=status, message=str(exc), status_code=status)

    # -- who is asking -----------------------------------------------------------------------------

    def signed_in(self, request: Request) -> Session | RedirectResponse:
        """The session, or a redirect to the sign-in page that comes back here."""
        session = self.sessions.get(request)
        if session is not None:
            return session
        if not self.sessions.auth:  # auth off: everyone is in, as with the API
            return self.sessions.sign_in("")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{self.prefix}/signin?{httpx.QueryParams({'next': target})}", status_code=303)

    def csrf(self, session: Session, request: Request, form_value: str | None = None) -> None:
        check_csrf(session.csrf, form_value if form_value is not None else request.headers.get("x-csrf-token"))

    # -- the API -----------------------------------------------------------------------------------

    async def call_api(self, request: Request, session: Session, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``method path`` on this app's own API with the session's key; the raw answer."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if session.token:
            headers["authorization"] = f"Bearer {session.token}"
        client_host = request.client.host if request.client else "console"
        transport = httpx.ASGITransport(app=request.app, client=(client_host, 0))
        async with httpx.AsyncClient(transport=transport, base_url="http://console.internal", timeout=None) as client:
            return await client.request(method, path, headers=headers, **kwargs)

    async def api_json(self, request: Request, session: Session, method: str, path: str, **kwargs: Any) -> Any:
        """The API's JSON answer; ``ApiFailed`` with its status and message when it refused."""
        answer = await self.call_api(request, session, method, path, **kwargs)
        if answer.status_code >= 400:
            raise ApiFailed(api_message(answer), http_status=answer.status_code)
        return answer.json()


def api_message(answer: httpx.Response) -> str:
    try:
        return answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"the API answered {answer.status_code}"


def secure(response: Response, csp: str = CSP) -> Response:
    response.headers["Content-Security-Policy"] = csp
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def set_session_cookie(response: Response, request: Request, session: Session, prefix: str) -> None:
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", secure=request.url.scheme == "https", path=prefix,
                        max_age=int(session.expires_at - time.time()))


def json_error(exc: TunekitError) -> JSONResponse:
    from tunekit.serve.handlers import error_body

    status = exc.http_status if 400 <= exc.http_status < 600 else 500
    return secure(JSONResponse(error_body(status, str(exc), getattr(exc, "code", None), getattr(exc, "param", None)), status_code=status))


def pages(console: Console):
    """Decorator for page routes: sign-in first, and tunekit's errors as an error page with their status."""

    def wrap(fn):
        @functools.wraps(fn)
        async def route(request: Request, *args, **kwargs):
            session = console.signed_in(request)
            if isinstance(session, Response):
                return session
            try:
                return await fn(request, session, *args, **kwargs)
            except TunekitError as exc:
                return console.error_page(request, session, exc)

        # FastAPI reads the route's parameters from its signature: the wrapped function's, less `session`
        # (filled in here), with annotations evaluated in the wrapped function's module
        signature = inspect.signature(fn, eval_str=True)
        route.__signature__ = signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "session"])
        return route

    return wrap


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False, default=str)


def _when(value: Any) -> str:
    """Unix seconds or milliseconds, or ISO text, as ``YYYY-MM-DD HH:MM`` UTC."""
    from datetime import UTC, datetime

    if value is None or value == "":
        return "–"
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
    return str(value).replace("T", " ")[:16]
