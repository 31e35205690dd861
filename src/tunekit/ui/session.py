"""Who is using the console: sign-in with an API key, the session cookie and the CSRF token.

Why a server-side session and not the key in the browser: a key kept where page scripts can read it
(``localStorage``, a plain cookie) is stolen by the first script injection. The browser gets only a
random session id in an ``HttpOnly`` cookie (scripts cannot read it) with ``SameSite=Strict`` (other
sites' pages do not send it); the key stays in this process's memory and is checked again on every
request, so a key revoked with ``tunekit keys revoke`` ends its sessions at once.

CSRF: every state-changing request (a form post or a script's ``fetch``) must carry the session's
random token, in a hidden ``csrf`` field or an ``X-CSRF-Token`` header; a page of another site can
neither read it nor guess it. The sign-in form, before any session exists, is protected the same
way by a short-lived pre-session cookie holding the token the form repeats (double submit).

Scopes are the API's (``tunekit.serve.keys``): viewing needs ``fine-tune``, promoting and rolling
back ``admin``. With auth turned off (``--no-auth``) the console, like the API, lets everyone in.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from fastapi import Request

from tunekit.errors import AuthError, ForbiddenError
from tunekit.serve.keys import DEFAULT_PROJECT, KeyInfo, KeyStore

__all__ = ["COOKIE", "PRE_COOKIE", "Session", "Sessions", "check_csrf"]

COOKIE = "tunekit_ui"           # the session id
PRE_COOKIE = "tunekit_ui_signin"  # the sign-in form's token, before there is a session
SESSION_TTL_S = 8 * 3600


@dataclass
class Session:
    """One signed-in browser. ``token`` is None only when auth is off."""

    id: str
    token: str | None
    key: KeyInfo | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    expires_at: float = field(default_factory=lambda: time.time() + SESSION_TTL_S)

    @property
    def project(self) -> str:
        return self.key.project if self.key else DEFAULT_PROJECT

    @property
    def who(self) -> str:
        """How the audit trail names the user: the key's id and name."""
        if self.key is None:
            return "console (auth off)"
        return f"key {self.key.key_id}" + (f" ({self.key.name})" if self.key.name else "")

    def allows(self, scope: str) -> bool:
        return self.key is None or self.key.allows(scope)

    def require(self, scope: str, doing: str) -> None:
        """``ForbiddenError`` (403) naming the scope needed for ``doing``."""
        if not self.allows(scope):
            raise ForbiddenError(f"{doing} needs a key of scope {scope!r}; you signed in with key {self.key.key_id} of scope "
                                 f"{self.key.scope!r}. Sign out and sign in with a key made by `tunekit keys create --scope {scope}`")


class Sessions:
    """The signed-in sessions of this process (in memory: a restart signs everyone out)."""

    def __init__(self, keys: KeyStore | None):
        self.keys = keys
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @property
    def auth(self) -> bool:
        return self.keys is not None

    def sign_in(self, token: str) -> Session:
        """A new session for a valid key; ``AuthError`` (401) saying what to paste otherwise."""
        if self.keys is None:
            return self._add(Session(secrets.token_urlsafe(32), None, None))
        token = (token or "").strip()
        if not token:
            raise AuthError("paste an API key (tk-...); create one with `tunekit keys create --scope fine-tune`")
        info = self.keys.verify(token)
        if info is None:
            raise AuthError("that API key is unknown, revoked or mistyped (keys look like tk-1a2b3c4d-...); "
                            "see `tunekit keys list`, or create one with `tunekit keys create --scope fine-tune`")
        return self._add(Session(secrets.token_urlsafe(32), token, info))

    def get(self, request: Request) -> Session | None:
        """The request's session: None when there is none, it expired, or its key was revoked."""
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
        if session is None or session.expires_at < time.time():
            self.sign_out(sid)
            return None
        if session.token is not None and self.keys is not None and self.keys.verify(session.token) is None:
            self.sign_out(sid)  # revoked since sign-in
            return None
        return session

    def sign_out(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _add(self, session: Session) -> Session:
        now = time.time()
        with self._lock:
            for sid in [sid for sid, s in self._sessions.items() if s.expires_at < now]:
                del self._sessions[sid]
            self._sessions[session.id] = session
        return session


def check_csrf(expected: str, sent: str | None) -> None:
    """403 unless ``sent`` is the session's token (compared in constant time)."""
    if not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise ForbiddenError("missing or wrong CSRF token: reload the page and try again (a form or script of another site "
                             "cannot act on this console)", code="csrf_failed")
