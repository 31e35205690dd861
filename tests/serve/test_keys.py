"""API keys (hashed, scoped) and per-key rate limits."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from tunekit.errors import ConfigError
from tunekit.serve.keys import (
    AuthError,
    ForbiddenError,
    KeyStore,
    authenticate,
    startup_message,
)
from tunekit.serve.ratelimit import RateLimited, RateLimiter


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.db")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- store -------------------------------------------------------------------------------------

def test_create_and_verify_round_trip(store: KeyStore) -> None:
    token, info = store.create("inference", name="ci")
    assert re.fullmatch(r"tk-[0-9a-f]{8}-[A-Za-z0-9_-]{43}", token)
    assert token.split("-")[1] == info.key_id
    assert (info.scope, info.name, info.revoked_at) == ("inference", "ci", None)
    assert store.verify(token) == info
    assert store.verify(f"  {token}\n") == info  # pasted with whitespace
    assert KeyStore(store.path).verify(token) == info  # a second store on the same file (another process)
    assert store.list() == [info]


def test_plaintext_secret_is_never_in_the_database(store: KeyStore) -> None:
    token, info = store.create("admin")
    store.verify(token)
    secret = token.split("-", 2)[2]
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob("keys.db*"))  # the WAL file too
    assert info.key_id.encode() in raw
    assert secret.encode() not in raw and token.encode() not in raw


def test_wrong_unknown_malformed_and_revoked_keys_fail(store: KeyStore) -> None:
    token, info = store.create("inference")
    other, _ = store.create("inference")
    prefix, key_id, secret = token.split("-", 2)
    wrong_secret = f"{prefix}-{key_id}-{other.split('-', 2)[2]}"
    unknown_id = f"{prefix}-{'0' * 8 if key_id != '0' * 8 else '1' * 8}-{secret}"
    for bad in [wrong_secret, unknown_id, "", "tk-", "tk-zzzzzzzz-" + secret, token[:-1], token + "x",
                "Bearer " + token, "tk-" + key_id + "-" + "é" * 43, None, 42]:
        assert store.verify(bad) is None, bad  # type: ignore[arg-type]
    assert store.revoke(info.key_id) is True
    assert store.verify(token) is None
    assert store.revoke(info.key_id) is False  # already revoked
    assert store.revoke("ffffffff" if key_id != "ffffffff" else "eeeeeeee") is False
    revoked = next(k for k in store.list() if k.key_id == info.key_id)
    assert revoked.revoked_at is not None


def test_unknown_scope_is_a_config_error_listing_the_valid_ones(store: KeyStore) -> None:
    with pytest.raises(ConfigError, match="'inference'.*'admin'"):
        store.create("superuser")
    assert store.list() == []


def test_scopes_admin_allows_everything(store: KeyStore) -> None:
    inference, _ = store.create("inference")
    admin, _ = store.create("admin")
    assert authenticate(store, f"Bearer {inference}", "inference").scope == "inference"
    assert authenticate(store, f"Bearer {admin}", "inference").scope == "admin"
    assert authenticate(store, f"Bearer {admin}", "admin").scope == "admin"
    with pytest.raises(ForbiddenError, match="needs scope 'admin'") as exc:
        authenticate(store, f"Bearer {inference}", "admin")
    assert (exc.value.http_status, exc.value.code, exc.value.param) == (403, "insufficient_scope", None)


def test_concurrent_creates_from_threads(store: KeyStore) -> None:
    made: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                made.append(store.create("inference")[0])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(made) == 20 and len({t.split("-")[1] for t in made}) == 20
    assert len(store.list()) == 20
    assert all(store.verify(t) is not None for t in made)


# --- authenticate ------------------------------------------------------------------------------

def test_authenticate_missing_or_bad_header_is_401(store: KeyStore) -> None:
    token, _ = store.create("inference")
    with pytest.raises(AuthError, match="tunekit keys create --scope inference") as exc:
        authenticate(store, None, "inference")
    assert (exc.value.http_status, exc.value.code, exc.value.param) == (401, "invalid_api_key", None)
    for header in [f"Basic {token}", token, "Bearer", "Bearer   ", "Bearer tk-00000000-nope"]:
        with pytest.raises(AuthError):
            authenticate(store, header, "inference")
    with pytest.raises(AuthError) as exc:
        authenticate(store, f"Bearer {token[:-2]}", "inference")
    assert token[10:] not in str(exc.value)  # the key sent is not echoed back


def test_authenticate_accepts_x_api_key_and_any_case_bearer(store: KeyStore) -> None:
    token, info = store.create("inference")
    assert authenticate(store, None, "inference", api_key_header=token) == info
    assert authenticate(store, f"bearer {token}", "inference") == info
    assert authenticate(store, "", "inference", api_key_header=token) == info
    with pytest.raises(AuthError):  # a present Authorization header wins, even if x-api-key is good
        authenticate(store, "Basic abc", "inference", api_key_header=token)


def test_no_store_means_auth_is_off() -> None:
    assert authenticate(None, None, "admin") is None
    assert authenticate(None, "Bearer whatever", "inference") is None
    assert "OFF" in startup_message(None)


def test_startup_message_counts_active_keys(store: KeyStore) -> None:
    assert "no active API keys" in startup_message(store)
    _, info = store.create("inference")
    store.create("admin")
    store.revoke(info.key_id)
    assert "1 active API key" in startup_message(store)


# --- rate limits -------------------------------------------------------------------------------

def test_rate_limiter_burst_then_retry_after_then_recovery() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=30, burst=3, clock=clock)  # one token per 2 s
    assert [limiter.check("a") for _ in range(3)] == [None, None, None]
    assert limiter.check("a") == pytest.approx(2.0)
    clock.now += 0.5
    assert limiter.check("a") == pytest.approx(1.5)
    clock.now += 1.5
    assert limiter.check("a") is None
    assert limiter.check("a") == pytest.approx(2.0)
    clock.now += 60  # long idle: refilled to the burst, not beyond
    assert [limiter.check("a") for _ in range(4)] == [None, None, None, pytest.approx(2.0)]


def test_rate_limiter_keys_are_independent_and_enforce_raises_429() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst=1, clock=clock)
    assert limiter.check("a") is None
    assert limiter.check("b") is None
    clock.now += 0.25
    with pytest.raises(RateLimited, match="retry in 1 s") as exc:
        limiter.enforce("a")
    err = exc.value
    assert (err.http_status, err.code, err.param, err.retry_after) == (429, "rate_limit_exceeded", None, 1)
    assert err.headers == {"Retry-After": "1"}
    slow = RateLimiter(requests_per_minute=6, burst=1, clock=clock)  # one token per 10 s
    slow.enforce("a")
    with pytest.raises(RateLimited) as exc:
        slow.enforce("a")
    assert exc.value.retry_after == 10


def test_rate_limiter_default_burst_and_disabled() -> None:
    assert RateLimiter(120).burst == 120
    assert RateLimiter(0.5).burst == 1
    for rpm in (0, -1):
        off = RateLimiter(rpm, clock=FakeClock())
        assert all(off.check("a") is None for _ in range(1000))
        assert len(off) == 0


def test_rate_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst=2, clock=clock, max_keys=50)
    for i in range(200):
        limiter.check(f"k{i}")
    assert len(limiter) == 50
    clock.now += 2.0  # every bucket has refilled: all are dropped on the next call
    limiter.check("new")
    assert len(limiter) == 1


def test_rate_limiter_is_thread_safe() -> None:
    limiter = RateLimiter(requests_per_minute=60, burst=100, clock=lambda: 5.0)  # frozen clock: no refill
    allowed = []

    def work() -> None:
        allowed.append(sum(limiter.check("a") is None for _ in range(200)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100
