"""When to retry a teacher request, and how long to wait first.

Transient failures (connection errors, timeouts, 408/409/429/5xx, a broken response body) are retried
with exponential backoff and jitter, so many workers failing together do not retry together. A
server's Retry-After is honoured for the whole pool: when the endpoint says "wait", no worker sends.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
FATAL_STATUS = frozenset({401, 403, 404})  # wrong key, no access, wrong model or URL: no request will succeed
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
MAX_RETRY_AFTER_S = 900.0  # a longer wait than this is a server's mistake, not a plan


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Equal jitter: half the exponential step for sure, the other half at random."""
    step = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
    return step / 2 + (rng or random).uniform(0, step / 2)


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's requested wait: `retry-after-ms`, `retry-after` in seconds, or an HTTP date."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return _clamp(float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _clamp(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return _clamp(when - (time.time() if now is None else now))


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class Clock:
    """Time as the pool sees it; tests swap in a fast one to serve long waits at once."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


CLOCK = Clock()


class Pause:
    """A pool-wide pause: set by a Retry-After, awaited by every worker before it sends."""

    def __init__(self) -> None:
        self.until = 0.0

    def extend(self, seconds: float) -> bool:
        """Pause for `seconds` from now; True when that pushes the pause further out."""
        until = CLOCK.now() + seconds
        if until <= self.until:
            return False
        self.until = until
        return True

    async def wait(self) -> None:
        while (left := self.until - CLOCK.now()) > 0:
            await CLOCK.sleep(left)
