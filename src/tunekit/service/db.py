"""The service's SQLite file (``WORKSPACE/service/service.db``): files, jobs, events, evals.

One file, WAL mode, a fresh connection per call (safe across the server's threads and the worker
processes on the same machine). Each module creates its own tables with ``CREATE TABLE IF NOT
EXISTS`` on first use, so a new table needs no migration step.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["connect", "new_id", "now"]


@contextmanager
def connect(path: Path, schema: str = "") -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` with ``schema`` (``;``-separated statements) applied, rows as
    ``sqlite3.Row``; committed when the block ends without an error, rolled back otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        if schema:
            conn.executescript(schema)
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def new_id(prefix: str) -> str:
    """An OpenAI-style id: ``prefix-`` and 24 random hex characters (``file-...``, ``ftjob-...``)."""
    import secrets

    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    """Unix seconds, as OpenAI's ``created_at`` fields are."""
    return int(time.time())
