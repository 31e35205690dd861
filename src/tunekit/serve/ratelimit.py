"""Per-key rate limits for the server: a token bucket per API key id.

Each key's bucket holds up to ``burst`` tokens and refills at ``requests_per_minute / 60`` tokens a
second; a request takes one token. When the bucket is empty the request is answered with 429 and a
``Retry-After`` header saying how many whole seconds until the next token.

Memory stays bounded: buckets are kept in order of last use, and a bucket idle long enough to have
refilled completely is dropped, which changes nothing (a new bucket starts full). ``max_keys`` caps
the number of buckets even if many keys are active at once; the least recently used goes first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from tunekit.errors import RateLimited


class RateLimiter:
    """A token bucket per key. ``requests_per_minute <= 0`` turns limiting off.

    ``burst`` is how many requests a key may make at once after being idle; by default one minute's
    allowance (``ceil(requests_per_minute)``, at least 1). ``clock`` is a seam for tests.
    """

    def __init__(self, requests_per_minute: float, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.requests_per_minute = requests_per_minute
        self.enabled = requests_per_minute > 0
        self.burst = burst if burst is not None else max(1, math.ceil(requests_per_minute))
        self._rate = requests_per_minute / 60.0  # tokens per second
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last update)
        self._lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """None if ``key`` may make a request now (and takes a token), else the seconds until it may."""
        if not self.enabled:
            return None
        with self._lock:
            now = self._clock()
            self._drop_idle(now)
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - last) * self._rate)
            allowed = tokens >= 1.0 - 1e-9
            if allowed:
                tokens = max(0.0, tokens - 1.0)
            self._buckets[key] = (tokens, now)  # re-inserted last: the order is by last use
            return None if allowed else (1.0 - tokens) / self._rate

    def wait(self, key: str) -> float | None:
        """Like ``check``, without taking a token: None if ``key`` has one now, else the seconds until it will."""
        if not self.enabled:
            return None
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), self._clock()))
            tokens = min(float(self.burst), tokens + max(0.0, self._clock() - last) * self._rate)
            return None if tokens >= 1.0 - 1e-9 else (1.0 - tokens) / self._rate

    def enforce(self, key: str) -> None:
        """Take a token for ``key`` or raise ``RateLimited`` with the whole seconds to wait (>= 1)."""
        wait = self.check(key)
        if wait is not None:
            retry_after = max(1, math.ceil(round(wait, 6)))
            raise RateLimited(f"rate limit exceeded for API key {key}: {self.requests_per_minute:g} requests per minute "
                              f"(bursts of {self.burst}); retry in {retry_after} s", retry_after)

    def __len__(self) -> int:
        return len(self._buckets)

    def _drop_idle(self, now: float) -> None:
        refill_seconds = self.burst / self._rate
        while self._buckets:
            key, (_, last) = next(iter(self._buckets.items()))
            if now - last < refill_seconds and len(self._buckets) < self._max_keys:
                return
            del self._buckets[key]
