"""Micro-batching: requests that arrive together are answered in one batched generation.

Under concurrent load this raises throughput (one pass of the model serves several requests); a lone
request waits at most `max_wait_s` for company.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

Batch = Callable[[list[str]], list[str]]


class Batcher:
    def __init__(self, run_batch: Batch, max_batch_size: int, max_wait_s: float = 0.005) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue: queue.Queue[tuple[str, Future[str]]] = queue.Queue()
        self.batches: list[int] = []  # sizes of the batches run, for tests and metrics
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def submit(self, text: str) -> str:
        future: Future[str] = Future()
        self.queue.put((text, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self.queue.get(timeout=remaining))
                except queue.Empty:
                    break
            self.batches.append(len(batch))
            try:
                outputs = self.run_batch([text for text, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear of the failure
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), output in zip(batch, outputs, strict=True):
                future.set_result(output)
