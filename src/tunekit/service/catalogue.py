"""The base models a fine-tuning job may start from, managed by an admin.

Why a catalogue: a job's ``model`` is sent by a client, and a client must never make the server open
a path or download a hub id of its choosing. An admin adds each base once
(``tunekit models add smollm2 bundled:smollm2``, or a local folder); a job names it by that name,
and a name outside the catalogue is a 400 listing what is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunekit.artifacts import Workspace
from tunekit.errors import ConfigError, ServingError
from tunekit.service.db import connect, now

__all__ = ["BaseModel", "Catalogue", "UnknownBase"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS base_models (
    name     TEXT PRIMARY KEY,
    ref      TEXT NOT NULL,     -- what model.base gets: bundled:NAME or an absolute folder
    added_at INTEGER NOT NULL
);"""
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # part of `ft:` ids: no dots or colons


@dataclass(frozen=True)
class BaseModel:
    name: str       # what a job's `model` names
    ref: str        # `model.base` of the job's run
    added_at: int   # Unix seconds


class UnknownBase(ServingError):
    """400: a job names a base model that is not in the catalogue."""

    http_status, code = 400, "model_not_available"


class Catalogue:
    """The base-model table in ``service.db``."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.service_db

    def add(self, name: str, ref: str) -> BaseModel:
        """Add (or re-point) ``name``; ``ref`` is ``bundled:NAME`` or an existing model folder (stored absolute)."""
        if not _NAME.fullmatch(name):
            raise ConfigError(f"base model name {name!r}: use 1-64 lowercase letters, digits, '_' or '-' (it becomes part of `ft:` model ids)")
        if not ref.startswith("bundled:"):
            folder = Path(ref).expanduser()
            if not folder.is_dir():
                raise ConfigError(f"{ref}: no such model folder; give `bundled:smollm2`, `bundled:minilm` or a folder saved with save_pretrained")
            ref = str(folder.resolve())
        entry = BaseModel(name, ref, now())
        with connect(self.db, _SCHEMA) as conn:
            conn.execute("INSERT OR REPLACE INTO base_models (name, ref, added_at) VALUES (?, ?, ?)", (name, ref, entry.added_at))
        return entry

    def remove(self, name: str) -> bool:
        with connect(self.db, _SCHEMA) as conn:
            return conn.execute("DELETE FROM base_models WHERE name = ?", (name,)).rowcount > 0

    def list(self) -> list[BaseModel]:
        with connect(self.db, _SCHEMA) as conn:
            return [BaseModel(*row) for row in conn.execute("SELECT name, ref, added_at FROM base_models ORDER BY name")]

    def get(self, name: str) -> BaseModel:
        """The entry named ``name``, or ``UnknownBase`` (400) listing the catalogue."""
        found = {b.name: b for b in self.list()}
        if name not in found:
            listed = ", ".join(sorted(found)) or "none yet (an admin adds one with `tunekit models add NAME bundled:smollm2`)"
            raise UnknownBase(f"model: {name!r} is not a base model this server fine-tunes; available: {listed}", param="model")
        return found[name]
