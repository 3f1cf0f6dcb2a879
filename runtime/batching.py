"""Micro-batching with a bounded queue: requests that arrive together are answered in one batched
generation, by one worker, so the model never runs more requests at once than one batch.

- The queue holds at most `max_queue` requests: when it is full, `submit` raises `Overloaded` at once
  (the server answers 429 with Retry-After) instead of letting waits grow without bound.
- Each request has a deadline: one still waiting when it passes gets `DeadlineExceeded` (504), and the
  worker skips it, so no answer is computed for a client that has gone.
- A lone request runs at once; requests that queued while a batch ran form the next batch. Nothing is
  kept per request: counters only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

# A batch of requests (texts, token ids: whatever the caller queues) -> one answer per request, in order.
Batch = Callable[[list[Any]], list[Any]]


class Overloaded(Exception):
    """The queue is full: try again later."""


class DeadlineExceeded(Exception):
    """The request waited past its deadline; its work was dropped."""


class Batcher:
    def __init__(self, run_batch: Batch, max_batch_size: int, max_queue: int = 64, max_wait_s: float = 0.0) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue: queue.Queue[tuple[Any, Future[Any], float]] = queue.Queue(maxsize=max_queue)
        self.batch_sizes: Counter[int] = Counter()  # batch size -> batches run: bounded by max_batch_size
        self.expired = 0  # requests dropped at their deadline before they ran
        self.worker = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.worker.start()

    @property
    def alive(self) -> bool:
        return self.worker.is_alive()

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    @property
    def full(self) -> bool:
        """The next request would be refused."""
        return self.queue.full()

    def _enqueue(self, request: Any, timeout_s: float) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            self.queue.put_nowait((request, future, time.monotonic() + timeout_s))
        except queue.Full:
            raise Overloaded from None
        return future

    def submit(self, request: Any, timeout_s: float = 30.0) -> Any:
        """Wait for one request's answer, blocking this thread (see `answer` for an event loop)."""
        future = self._enqueue(request, timeout_s)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            if future.cancel():  # still queued: the worker will skip it
                raise DeadlineExceeded from None
            return future.result()  # already running: its batch is nearly done, take the answer
        except CancelledError:
            raise DeadlineExceeded from None

    async def answer(self, request: Any, timeout_s: float = 30.0) -> Any:
        """`submit` for an event loop: waiting holds no thread, so the queue, not a thread pool, bounds
        how many requests wait."""
        import asyncio

        deadline = time.monotonic() + timeout_s
        future = self._enqueue(request, timeout_s)
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
            # An answer and the timeout can be due in the same turn of a busy event loop, and the answer's
            # callback runs first: past the deadline it is still late.
            if time.monotonic() > deadline:
                raise DeadlineExceeded
            return answer
        except (TimeoutError, asyncio.TimeoutError):
            future.cancel()  # still queued: dropped; already running: its answer is discarded
            raise DeadlineExceeded from None
        except asyncio.CancelledError:
            if future.cancelled():  # the worker found it past its deadline and dropped it
                raise DeadlineExceeded from None
            future.cancel()  # this request itself was cancelled: drop its work too
            raise

    def _next_batch(self) -> list[tuple[Any, Future[Any]]]:
        batch: list[tuple[Any, Future[Any]]] = []
        item: tuple[Any, Future[Any], float] | None = self.queue.get()
        wait_until = time.monotonic() + self.max_wait_s
        while item is not None:
            request, future, deadline = item
            if time.monotonic() > deadline:
                future.cancel()
            if future.set_running_or_notify_cancel():
                batch.append((request, future))
            else:
                self.expired += 1
            if len(batch) >= self.max_batch_size:
                break
            try:
                item = self.queue.get(timeout=max(0.0, wait_until - time.monotonic()))
            except queue.Empty:
                item = None
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            try:
                outputs = self.run_batch([request for request, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear of the failure
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), output in zip(batch, outputs, strict=True):
                future.set_result(output)
