"""Micro-batching in the package server: requests that arrive together share one generation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from distillc_runtime.batching import Batcher


def slow_upper(texts: list[str]) -> list[str]:
    time.sleep(0.05)
    return [t.upper() for t in texts]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer() -> None:
    batcher = Batcher(slow_upper, max_batch_size=4)
    texts = [f"request {i}" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(batcher.submit, texts))
    assert answers == [t.upper() for t in texts]
    assert max(batcher.batches) > 1 and max(batcher.batches) <= 4
    assert sum(batcher.batches) == 12


def test_a_lone_request_is_not_held_back() -> None:
    batcher = Batcher(lambda texts: texts, max_batch_size=8, max_wait_s=0.005)
    started = time.perf_counter()
    assert batcher.submit("alone") == "alone"
    assert time.perf_counter() - started < 0.5
    assert batcher.batches == [1]


def test_a_failed_batch_fails_every_request_in_it_and_the_worker_serves_on() -> None:
    failing = {"on": True}

    def flaky(texts: list[str]) -> list[str]:
        time.sleep(0.05)
        if failing["on"]:
            raise RuntimeError("model exploded")
        return texts

    batcher = Batcher(flaky, max_batch_size=4)
    outcomes: list[str] = []

    def call() -> None:
        try:
            batcher.submit("x")
            outcomes.append("answered")
        except RuntimeError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert outcomes == ["model exploded"] * 3
    failing["on"] = False
    assert batcher.submit("after") == "after"
