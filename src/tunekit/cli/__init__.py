"""The ``tunekit`` command: thin wrappers that parse arguments, call one entry function each, and
turn tunekit's errors into a message and an exit code (no traceback for user errors).

One module per command group (``lifecycle``, ``data``, ``registry``, ``serving``, ``production``, ``ui``);
``common`` holds what they share. Importing the modules registers their commands on ``app``.
"""

from __future__ import annotations

import os
import sys

from tunekit.cli import data, lifecycle, production, registry, serving, ui  # noqa: F401  (registers the commands)
from tunekit.cli.common import app, err_console
from tunekit.errors import TunekitError
from tunekit.artifacts import quiet_libraries

__all__ = ["app", "main"]


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()
    try:
        app()
    except TunekitError as exc:
        err_console.print(f"[bold red]{type(exc).__name__}:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
