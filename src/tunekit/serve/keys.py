"""API keys for the server: created by ``tunekit keys create``, stored hashed, checked per request.

A key looks like ``tk-<key_id>-<secret>``: ``key_id`` is 8 hex characters that name the key (shown
by ``tunekit keys list``, used to revoke it and in logs), ``secret`` is 32 random bytes from
``secrets`` in URL-safe base64. The plaintext is shown once, at creation; the store keeps only the
key id, its scope, a name, the creation and revocation times, and the SHA-256 of the secret.

Why SHA-256 and not a slow password hash (bcrypt, scrypt, argon2): slow hashes exist to make
guessing a *low-entropy* password expensive after the hashes leak. A 256-bit random secret cannot
be guessed at any hashing speed, so a slow KDF would protect nothing, and it would add tens of
milliseconds of CPU to every request, since every request verifies its key. For the same reason
there is no salt or pepper: no two secrets share a hash, and there is no dictionary to precompute.
Hashes are compared with ``hmac.compare_digest``, so the time taken does not reveal how much of a
guess matched.

Scopes: ``inference`` may call models; ``fine-tune`` may also upload files and run fine-tuning jobs
and evals (OpenAI's keys do both, and a team that trains a model calls it); ``admin`` may do
everything, loading adapters and managing the base-model catalogue included.

Projects: every key belongs to one project (``default`` unless created with ``--project``). Files,
jobs, evals and fine-tuned models belong to the project of the key that made them, and a key of
another project is answered 404, as if they did not exist (OpenAI's projects behave the same way).

``authenticate`` is what a route calls. It raises ``AuthError`` (401) or ``ForbiddenError`` (403),
which the server's error handlers turn into OpenAI's error shape. Passing ``store=None`` means auth
was turned off on purpose for local use; ``startup_message`` is the line the server prints so that
nobody runs without auth by accident.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tunekit.errors import AuthError, ConfigError, ForbiddenError

SCOPES = {
    "inference": "call the models: classify, chat and text completions",
    "fine-tune": "inference, plus files, fine-tuning jobs and evals in the key's project",
    "admin": "everything, including loading and unloading adapters",
}

_TOKEN = re.compile(r"tk-([0-9a-f]{8})-([A-Za-z0-9_-]{43})")  # token_urlsafe(32) is 43 characters
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    scope       TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    project     TEXT NOT NULL DEFAULT 'default'
)"""
DEFAULT_PROJECT = "default"
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # no dots or colons: it is part of `ft:` model ids


@dataclass(frozen=True)
class KeyInfo:
    """What the store knows about a key; never the secret."""

    key_id: str
    scope: str
    name: str
    created_at: str  # ISO 8601, UTC
    revoked_at: str | None = None
    project: str = DEFAULT_PROJECT

    def allows(self, required_scope: str) -> bool:
        """``admin`` allows everything, ``fine-tune`` also ``inference``; any other scope only itself."""
        return self.scope in ("admin", required_scope) or (self.scope == "fine-tune" and required_scope == "inference")


class KeyStore:
    """API keys in a SQLite file (WAL mode). Safe across threads: each call opens its own connection."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._init_lock = threading.Lock()
        self._initialised = False

    def create(self, scope: str, name: str = "", project: str = DEFAULT_PROJECT) -> tuple[str, KeyInfo]:
        """Make a key; returns its plaintext (the only time it exists) and what is stored about it."""
        if scope not in SCOPES:
            valid = ", ".join(f"{s!r} ({what})" for s, what in SCOPES.items())
            raise ConfigError(f"unknown API key scope {scope!r}; valid scopes: {valid}")
        if not _PROJECT.fullmatch(project):
            raise ConfigError(f"project name {project!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit")
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        secret = secrets.token_urlsafe(32)
        with self._connect() as conn:
            for _ in range(10):  # 32-bit ids: a collision is rare, and then we draw again
                info = KeyInfo(secrets.token_hex(4), scope, name, created_at, project=project)
                try:
                    conn.execute("INSERT INTO api_keys (key_id, secret_hash, scope, name, created_at, project) VALUES (?, ?, ?, ?, ?, ?)",
                                 (info.key_id, _hash(secret), scope, name, created_at, project))
                    conn.commit()
                    return f"tk-{info.key_id}-{secret}", info
                except sqlite3.IntegrityError:
                    conn.rollback()
        raise RuntimeError(f"could not find a free key id in {self.path} after 10 tries")

    def verify(self, token: str) -> KeyInfo | None:
        """The key's info if ``token`` is a valid, unrevoked key; else None. Never raises on bad input."""
        match = _TOKEN.fullmatch(token.strip()) if isinstance(token, str) else None
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._connect() as conn:
            row = conn.execute("SELECT key_id, scope, name, created_at, revoked_at, project, secret_hash FROM api_keys WHERE key_id = ?",
                               (key_id,)).fetchone()
        # compare even for an unknown id, so that timing says nothing about which ids exist
        ok = hmac.compare_digest(_hash(secret), row[6] if row else _DUMMY_HASH)
        if row is None or not ok or row[4] is not None:
            return None
        return KeyInfo(*row[:6])

    def list(self) -> builtins.list[KeyInfo]:
        """Every key, revoked ones included, oldest first; no secrets or hashes."""
        with self._connect() as conn:
            rows = conn.execute("SELECT key_id, scope, name, created_at, revoked_at, project FROM api_keys ORDER BY created_at, key_id").fetchall()
        return [KeyInfo(*row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key at once; False when no unrevoked key has this id."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as conn:
            changed = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                                   (now, key_id)).rowcount
            conn.commit()
        return changed > 0

    def check(self) -> None:
        """Open the store now (creating it if needed): ``ConfigError`` naming the file when it is not
        a readable key database, so a server stops at start with a message rather than a traceback."""
        with self._connect() as conn:
            try:
                conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._unreadable(exc) from None

    def _connect(self) -> closing[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        if not self._initialised:
            with self._init_lock:
                if not self._initialised:
                    try:
                        conn.execute("PRAGMA journal_mode=WAL")
                        conn.execute(_SCHEMA)
                        columns = {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
                        if "project" not in columns:  # a store made before projects: its keys belong to `default`
                            conn.execute(f"ALTER TABLE api_keys ADD COLUMN project TEXT NOT NULL DEFAULT '{DEFAULT_PROJECT}'")
                        conn.commit()
                    except sqlite3.DatabaseError as exc:
                        conn.close()
                        raise self._unreadable(exc) from None
                    self._initialised = True
        return closing(conn)

    def _unreadable(self, exc: Exception) -> ConfigError:
        return ConfigError(f"{self.path}: not a readable API key database ({exc}). Restore it from a backup, or move it aside "
                           f"(mv {self.path} {self.path}.corrupt) and create new keys with `tunekit keys create --scope inference`")


def authenticate(store: KeyStore | None, authorization_header: str | None, required_scope: str,
                 api_key_header: str | None = None) -> KeyInfo | None:
    """The caller's key, checked for ``required_scope``; None when auth is off (``store is None``).

    The key comes from ``Authorization: Bearer <key>``, else from ``x-api-key: <key>``. Raises
    ``AuthError`` (401) when it is missing or invalid, ``ForbiddenError`` (403) when its scope does
    not allow ``required_scope``.
    """
    if required_scope not in SCOPES:
        raise ValueError(f"unknown scope {required_scope!r}; expected one of {sorted(SCOPES)}")
    if store is None:
        return None
    how = f"send `Authorization: Bearer <key>`; create a key with `tunekit keys create --scope {required_scope}`"
    if authorization_header:
        scheme, _, token = authorization_header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(f"the Authorization header must be `Bearer <key>`, got scheme {scheme!r}; {how}")
    elif api_key_header:
        token = api_key_header
    else:
        raise AuthError(f"no API key: {how} (or `x-api-key: <key>`)")
    info = store.verify(token)
    if info is None:
        raise AuthError(f"invalid API key: unknown, revoked or mistyped (keys look like tk-1a2b3c4d-...); {how}")
    if not info.allows(required_scope):
        raise ForbiddenError(f"API key {info.key_id} has scope {info.scope!r}, and this route needs scope {required_scope!r}; "
                             f"use a key made with `tunekit keys create --scope {required_scope}`")
    return info


def startup_message(store: KeyStore | None) -> str:
    """One line for the server log at start: whether auth is on, and how many keys can get in."""
    if store is None:
        return ("auth is OFF: anyone who can reach this server may call every route, admin ones included. "
                "Turn it off only for local use.")
    active = sum(1 for k in store.list() if k.revoked_at is None)
    if active == 0:
        return (f"auth is on, but {store.path} holds no active API keys, so every request will get 401; "
                "create one with `tunekit keys create --scope inference`")
    return f"auth is on: {active} active API key(s) in {store.path}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def project_of(info: KeyInfo | None) -> str:
    """The project a request works in: its key's, or ``default`` when auth is off."""
    return info.project if info is not None else DEFAULT_PROJECT
