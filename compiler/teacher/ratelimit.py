"""Client-side rate limits: token buckets for requests and tokens per minute.

Staying under the endpoint's limits beats being throttled by it: a 429 costs a round trip and a backoff.
Each bucket holds one second's worth, so traffic is smooth rather than a burst at the start of a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0  # refill per second
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.clock = clock
        self.updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` can be taken (one larger than the bucket waits for a full bucket)."""
        self._refill()
        needed = min(amount, self.capacity)
        return max(0.0, (needed - self.level) / self.rate)

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount  # may go below zero: a large request is paid for by the wait of the next ones

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:  # first come, first served
            while (delay := self.wait_time(amount)) > 0:
                await asyncio.sleep(delay)
            self.take(amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits together; either may be absent."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, tokens: int) -> None:
        if self.requests:
            await self.requests.acquire(1)
        if self.tokens:
            await self.tokens.acquire(tokens)


def request_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """What an endpoint counts against tokens-per-minute when a request arrives: its prompt, about 4
    characters a token, plus the most it may answer."""
    return sum(len(m["content"]) for m in messages) // 4 + max_tokens
