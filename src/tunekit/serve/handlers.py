"""Every error leaves the server in OpenAI's error shape:
``{"error": {"message": str, "type": str, "code": str | None, "param": str | None}}``.

User mistakes are 4xx with a message naming what and where; only bugs are 500.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tunekit.errors import TunekitError

logger = logging.getLogger("tunekit.serve")

EXAMPLE = '{"inputs": ["some text"]}'
EXAMPLES = {  # a valid body per route, for the messages about bodies that are not JSON objects
    "/v1/chat/completions": '{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]}',
    "/v1/completions": '{"model": "MODEL", "prompt": "Once upon a time"}',
}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    """The OpenAI error object; also sent as the last event of a stream that fails midway."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # never fail on a lone surrogate quoted from the request
    param = param if param is None else param.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": {"message": message, "type": _error_type(status), "code": code, "param": param}}


def error_response(status: int, message: str, code: str | None = None, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)


ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
               503: "service_unavailable", 504: "timeout_error"}


def _error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "server_error"


def install(app: FastAPI) -> None:
    """Register the handlers that give every error response the OpenAI shape."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(TunekitError, _tunekit_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    example = EXAMPLES.get(request.url.path, EXAMPLE)
    if any(err["type"] == "json_invalid" for err in errors):
        reason = next(err for err in errors if err["type"] == "json_invalid").get("ctx", {}).get("error", "")
        message = f"the request body is not valid JSON ({reason}); send a JSON object such as {example}, with Content-Type: application/json"
        return error_response(422, message, "invalid_json", "body")
    problems = [_describe(err, example) for err in errors]
    first_param = _param(errors[0]["loc"]) if errors else None
    return error_response(422, "; ".join(problems), "invalid_request", first_param)


def _describe(err: dict, example: str) -> str:
    where = _param(err["loc"])
    if where is None and err["type"] in ("missing", "model_attributes_type"):
        return f"the request body must be a JSON object such as {example}, sent with Content-Type: application/json"
    if err["type"] == "missing":
        return f"{where}: required, but missing"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field; the body has the fields `inputs` and (multi-task models only) `task`"
    return f"{where or 'body'}: {err['msg']}"


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    phrase = HTTPStatus(exc.status_code).phrase
    message = f"{exc.detail}: {request.method} {request.url.path}" if exc.detail == phrase else str(exc.detail)
    return error_response(exc.status_code, message, phrase.lower().replace(" ", "_"), None, getattr(exc, "headers", None))


async def _tunekit_error(request: Request, exc: TunekitError) -> JSONResponse:
    return error_response(exc.http_status, str(exc), getattr(exc, "code", None), getattr(exc, "param", None),
                          headers=getattr(exc, "headers", None))  # Retry-After on 429, WWW-Authenticate on 401


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal server error ({type(exc).__name__}); see the server log", "internal_error")
