"""tunekit's exceptions.

Every error a user can cause is one of these, and its message says what is wrong, where (file,
line, field or YAML path) and what to do about it. The CLI prints the message without a traceback
and exits with ``exit_code``; the server maps ``http_status`` onto its response.

    TunekitError                 base class; never raised directly
    ├── ConfigError              the YAML config is invalid (all problems at once, with YAML paths)
    ├── DataError                a data file is unreadable or a row is invalid (file, line, field)
    ├── ModelError               a base model or trained adapter cannot be found or loaded
    ├── RegistryError            a registry reference (NAME@ALIAS, NAME/VERSION) does not resolve
    ├── InputError               a request to the server is invalid (422/413)
    │   └── RequestError         ... with OpenAI's error ``code`` and the ``param`` at fault
    └── ServingError             the server cannot answer this request; ``code``, ``param``, ``headers``
        ├── AuthError            401: no key, or an unknown, revoked or malformed one
        ├── ForbiddenError       403: the key's scope does not allow the route
        ├── FeedbackError        404 unknown request id, 422 feedback the log cannot take
        ├── GuardrailBlocked     400: a guardrail set to ``block`` fired
        ├── RateLimited          429: the key's rate (or a client's failed logins) is used up; Retry-After
        ├── NotReady             503: the model is loading or failed to load
        ├── RequestLogDown       503: the request log's writer stopped; nothing is answered unlogged
        └── RequestTimeout       504: the model did not answer within request_timeout_s

Every server error body is OpenAI's ``{"error": {"message", "type", "code", "param"}}``, built from
these fields by one handler.
"""

from __future__ import annotations


class TunekitError(Exception):
    """Base class of every error tunekit raises on purpose."""

    exit_code = 1
    http_status = 500


class ConfigError(TunekitError):
    """The config file is missing, not YAML, or fails validation."""

    exit_code = 2


class DataError(TunekitError):
    """A data file or row is invalid; the message names the file, line and field."""

    exit_code = 3


class ModelError(TunekitError):
    """A base model or adapter cannot be found or does not match what it is used with."""

    exit_code = 4


class RegistryError(TunekitError):
    """A model reference does not resolve, or a registry operation is not allowed."""

    exit_code = 5
    http_status = 404


class InputError(TunekitError):
    """A serving request is invalid. ``http_status`` is 422 (malformed) or 413 (too large)."""

    http_status = 422

    def __init__(self, message: str, http_status: int = 422):
        super().__init__(message)
        self.http_status = http_status


class RequestError(InputError):
    """An invalid request, with a machine-readable ``code`` and the ``param`` at fault."""

    def __init__(self, message: str, code: str, param: str | None = "inputs", http_status: int = 422):
        super().__init__(message, http_status)
        self.code = code
        self.param = param


class ServingError(TunekitError):
    """The server cannot answer this request: ``http_status``, OpenAI's ``code``, the ``param`` at
    fault (or None) and response ``headers`` (``Retry-After``, ``WWW-Authenticate``)."""

    code = "server_error"

    def __init__(self, message: str, code: str | None = None, param: str | None = None, http_status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code or type(self).code
        self.param = param
        if http_status is not None:
            self.http_status = http_status
        self.headers = headers or {}


class AuthError(ServingError):
    """401: no API key was sent, or the one sent is unknown, revoked or malformed."""

    http_status, code = 401, "invalid_api_key"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(ServingError):
    """403: the key is valid but its scope does not allow this route."""

    http_status, code = 403, "insufficient_scope"


class FeedbackError(ServingError):
    """Feedback the log cannot take: an unknown request id (404, ``request_not_found``) or a body
    without rating, label or answer, or with a rating outside -1..5 (422, ``invalid_feedback``)."""

    def __init__(self, message: str, code: str, param: str | None, http_status: int):
        super().__init__(message, code, param, http_status)


class GuardrailBlocked(ServingError):
    """A guardrail set to ``block`` fired: 400 with code ``guardrail_blocked``; ``flag`` says which."""

    http_status, code = 400, "guardrail_blocked"

    def __init__(self, message: str, flag):
        super().__init__(message)
        self.flag = flag


class RateLimited(ServingError):
    """429: the key used up its rate limit; ``retry_after`` is whole seconds until it may try again."""

    http_status, code = 429, "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class NotReady(ServingError):
    """503: the model is still loading (``model_loading``) or failed to load (``model_load_failed``)."""

    http_status = 503

    def __init__(self, message: str, code: str):
        super().__init__(message, code)


class RequestLogDown(ServingError):
    """503: the request log's writer thread has stopped, so ``/readyz`` fails and no request is
    answered without being logged."""

    http_status, code = 503, "request_log_down"


class RequestTimeout(ServingError):
    """504: the model did not answer within ``request_timeout_s``."""

    http_status, code = 504, "request_timeout"

    def __init__(self, seconds: float):
        super().__init__(f"the model did not answer within {seconds:g} s (setting request_timeout_s); retry later, send fewer "
                         "inputs or ask for fewer tokens")


class NotFound(ServingError):
    """404: no file, job, eval or model with this id in the caller's project (another project's
    objects answer exactly like missing ones, so ids reveal nothing across projects)."""

    http_status, code = 404, "not_found"


class Conflict(ServingError):
    """409: the object exists but is not in a state that allows this (cancelling a finished job)."""

    http_status, code = 409, "invalid_state"
