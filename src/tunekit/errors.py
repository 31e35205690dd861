"""tunekit's exceptions.

Every error a user can cause is one of these, and its message says what is wrong, where (file,
line, field or YAML path) and what to do about it. The CLI prints the message without a traceback
and exits with ``exit_code``; the server maps ``http_status`` onto its response.

    TunekitError                 base class; never raised directly
    ├── ConfigError              the YAML config is invalid (all problems at once, with YAML paths)
    ├── DataError                a data file is unreadable or a row is invalid (file, line, field)
    ├── ModelError               a base model or trained adapter cannot be found or loaded
    ├── RegistryError            a registry reference (NAME@ALIAS, NAME/VERSION) does not resolve
    └── InputError               a request to the server is invalid (422/413)
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
