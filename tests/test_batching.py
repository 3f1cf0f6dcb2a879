"""Micro-batching in the package server: requests that arrive together share one generation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from distillc_runtime.batching import Batcher, DeadlineExceeded, Overloaded


def slow_upper(texts: list[str]) -> list[str]:
    time.sleep(0.05)
    return [t.upper() for t in texts]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer() -> None:
    batcher = Batcher(slow_upper, max_batch_size=4)
    texts = [f"request {i}" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(batcher.submit, texts))
    assert answers == [t.upper() for t in texts]
    assert 1 < max(batcher.batch_sizes) <= 4
    assert sum(size * n for size, n in batcher.batch_sizes.items()) == 12


def test_a_lone_request_is_not_held_back() -> None:
    batcher = Batcher(lambda texts: texts, max_batch_size=8, max_wait_s=0.005)
    started = time.perf_counter()
    assert batcher.submit("alone") == "alone"
    assert time.perf_counter() - started < 0.5
    assert batcher.batch_sizes == {1: 1}


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


def test_a_full_queue_refuses_at_once_and_nothing_grows_per_request() -> None:
    release = threading.Event()

    def blocked(texts: list[str]) -> list[str]:
        release.wait(5)
        return texts

    batcher = Batcher(blocked, max_batch_size=1, max_queue=2)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(batcher.submit, "running")  # taken by the worker
        time.sleep(0.2)
        waiting = [pool.submit(batcher.submit, f"waiting {i}") for i in range(2)]  # fill the queue
        time.sleep(0.2)
        started = time.perf_counter()
        with pytest.raises(Overloaded):
            batcher.submit("one too many")
        assert time.perf_counter() - started < 0.1
        release.set()
        assert running.result() == "running" and [w.result() for w in waiting] == ["waiting 0", "waiting 1"]
    assert batcher.batch_sizes == {1: 3} and batcher.depth == 0


def test_a_request_past_its_deadline_is_dropped_not_computed() -> None:
    release, computed = threading.Event(), []

    def slow(texts: list[str]) -> list[str]:
        computed.extend(texts)
        release.wait(5)
        return texts

    batcher = Batcher(slow, max_batch_size=1, max_queue=8)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.submit, "first", 5.0)
        time.sleep(0.2)
        with pytest.raises(DeadlineExceeded):
            batcher.submit("late", timeout_s=0.3)  # still queued behind "first" when its time runs out
        release.set()
        assert first.result() == "first"
    time.sleep(0.2)
    assert computed == ["first"] and batcher.expired == 1
