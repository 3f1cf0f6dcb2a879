"""Client-side rate limits: the bucket arithmetic, and requests spaced out over real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillc import api
from distillc.teacher.ratelimit import TokenBucket, request_tokens
from tests.conftest import review_texts, sentiment, set_teacher, write_spec
from tests.fake_teacher import FakeTeacher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_at_the_rate_and_holds_one_second() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock)  # one a second
    assert bucket.wait_time(1) == 0
    bucket.take(1)
    assert bucket.wait_time(1) == pytest.approx(1.0)
    clock.now += 0.25
    assert bucket.wait_time(1) == pytest.approx(0.75)
    clock.now += 100  # idle time does not build up a burst
    assert bucket.level <= 1 and bucket.wait_time(1) == 0


def test_a_request_larger_than_the_bucket_is_paid_for_by_the_next_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(600, clock)  # 10 tokens a second, bucket of 10
    assert bucket.wait_time(50) == 0  # waits only for a full bucket
    bucket.take(50)
    assert bucket.wait_time(10) == pytest.approx(5.0)  # 40 in debt + 10 needed, at 10 a second


def test_request_tokens_counts_prompt_and_the_longest_answer() -> None:
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 20}]
    assert request_tokens(messages, 16) == 15 + 16


def test_requests_per_minute_spaces_requests_over_http(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(4))
        set_teacher(spec, requests_per_minute=120)
        api.build(spec, out=tmp_path / "out", until="label")
        arrivals = sorted(teacher.arrivals)
    assert teacher.requests == 4
    # 120 a minute with 4 allowed in flight: a second's worth (2) at once, then one every half second.
    assert arrivals[2] - arrivals[0] >= 0.45
    assert arrivals[3] - arrivals[0] >= 0.95
