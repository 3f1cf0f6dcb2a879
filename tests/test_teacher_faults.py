"""The teacher against a faulty endpoint: every request ends labeled or dead-lettered with a reason.

The fault matrix runs through a real build against the HTTP test server. Its waits (backoff and a
200 s Retry-After) are served by a fast clock, so the matrix takes seconds; one test keeps real time
to show that a Retry-After pauses the whole pool.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from distillc import api
from distillc.build.events import Event
from distillc.errors import DistillcError
from distillc.teacher import retry
from tests.conftest import edit_spec, set_teacher, write_spec
from tests.fake_teacher import FakeTeacher

RETRIES = 3
# scenario -> the faults of its first attempts; after them the server answers
TRANSIENT = {
    "fine": [],
    "ratelimited-now": ["429:0"],
    "ratelimited-2s": ["429:2"],
    "ratelimited-200s": ["429:200"],
    "error500": ["500"],
    "unavailable503": ["503", "503"],
    "timeout": ["timeout"],
    "reset": ["reset"],
    "malformed": ["malformed"],
    "truncated": ["truncated"],
    "offlabel": [],  # answered outside the label set, right when re-asked
}
PERMANENT = {
    "always500": ["500"] * (RETRIES + 1),
    "alwaysreset": ["reset"] * (RETRIES + 1),
    "alwaystruncated": ["truncated"] * (RETRIES + 1),
    "alwaysofflabel": [],  # outside the label set, re-ask included
}
SCENARIOS = TRANSIENT | PERMANENT


class FastClock(retry.Clock):
    """Waits pass at once; `slept` records them."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset += seconds
        await asyncio.sleep(0)


def scenario_of(text: str) -> str:
    return text.rsplit(" ", 1)[-1]


def fault(user: str, attempt: int) -> str | None:
    faults = SCENARIOS.get(scenario_of(user), [])
    return faults[attempt] if attempt < len(faults) else None


def answer(user: str) -> str:
    if "not valid" in user:  # the re-ask quotes the invalid answer back
        return "still unsure" if "alwaysofflabel" in user else "positive"
    if scenario_of(user) in ("offlabel", "alwaysofflabel"):
        return f"unsure ({scenario_of(user)})"
    return "positive"


def test_fault_matrix_every_input_ends_labeled_or_dead_lettered(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FastClock()
    monkeypatch.setattr(retry, "CLOCK", clock)
    texts = [f"review {i} of {name}" for name in SCENARIOS for i in range(3)]
    events: list[Event] = []
    with FakeTeacher(answer, fault=fault) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        set_teacher(spec, max_retries=RETRIES, timeout_s=1.0, max_concurrency=8, max_failed_share=0.5)
        result = api.build(spec, out=tmp_path / "out", until="label", emit=events.append)
        attempts = dict(teacher.attempts)
    label = result.stage("label")
    labeled = {row["input"] for row in _rows(label.artifact / "labeled.jsonl")}
    dead = {row["input"]: row for row in _rows(label.artifact / "dead_letter.jsonl")}

    assert labeled | set(dead) == set(texts) and not labeled & set(dead)  # each ends one way, none lost
    assert labeled == {t for t in texts if scenario_of(t) in TRANSIENT}
    table = []
    for text in texts:
        name = scenario_of(text)
        sent = attempts[text]
        if name in ("offlabel", "alwaysofflabel"):
            assert sent == 1  # the re-ask is a request of its own, below
        elif name in PERMANENT:
            assert sent == RETRIES + 1
        else:
            assert sent == len(SCENARIOS[name]) + 1  # retried exactly until it succeeded
        if text in dead:
            table.append((name, sent, "dead-lettered", dead[text]["reason"]))
        else:
            table.append((name, sent, "labeled", ""))
    reasons = {scenario_of(t): dead[t]["reason"] for t in dead}
    assert reasons["always500"].startswith("HTTP 500: injected 500") and "after 4 attempts" in reasons["always500"]
    assert "Disconnected" in reasons["alwaysreset"] or "reset" in reasons["alwaysreset"].lower()
    assert "payload" in reasons["alwaystruncated"].lower()
    assert reasons["alwaysofflabel"].startswith("answer is not one of the labels: 'still unsure'")
    assert dead[next(t for t in texts if "alwaysofflabel" in t)]["kind"] == "invalid"
    # The 200 s Retry-After was served in full, once for the pool, and said so.
    assert max(clock.slept) >= 199
    assert any("asked to wait 200 s: all requests paused" in e.message for e in events)
    summary = label.summary
    assert (summary["failed"], summary["rejected"]) == (9, 3)
    print("\n" + "\n".join(f"{name:18} {sent} sent  {outcome:13} {reason}" for name, sent, outcome, reason in table))


def test_a_retry_after_pauses_the_whole_pool(tmp_path: Path, tiny_model: Path) -> None:
    """Real time: after a 429 with Retry-After: 2 no request reaches the server for 2 s."""
    texts = [f"review {i} was lovely" for i in range(24)]
    limited = texts[5]
    with FakeTeacher(
        lambda t: "positive", delay_s=0.05, fault=lambda t, n: "429:2" if t == limited and n == 0 else None
    ) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        started = time.monotonic()
        result = api.build(spec, out=tmp_path / "out", until="label")
        elapsed = time.monotonic() - started
        (fault_time, _, _), arrivals = teacher.faults[0], teacher.arrivals
    assert result.stage("label").summary["labeled"] == len(texts)
    # Requests already on their way when the 429 left the server may land just after it; none after that.
    after = [a - fault_time for a in arrivals if a > fault_time + 0.1]
    assert after and min(after) >= 1.9
    assert elapsed >= 2


def test_an_endpoint_that_refuses_the_key_stops_the_build_at_once(tmp_path: Path, tiny_model: Path) -> None:
    texts = [f"review {i} was lovely" for i in range(40)]
    with FakeTeacher(lambda t: "positive", fault=lambda t, n: "401" if t == texts[10] else None) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out", until="label")
        sent = teacher.requests
    assert caught.value.code == "E405"
    assert "HTTP 401" in caught.value.message and "api_key_env" in (caught.value.help or "")
    assert sent < len(texts)  # it did not go on sending requests that cannot succeed


def test_json_answers_use_structured_output_and_are_validated_against_the_schema(
    tmp_path: Path, tiny_model: Path
) -> None:
    texts = [f"order {i} of {i % 5 + 1} chairs" for i in range(12)]

    def extract(user: str) -> str:
        if "not valid" in user:
            return '{"item": "chair", "count": 3}'
        count = int(user.split(" of ")[1].split()[0])
        return json.dumps({"item": "chair", "count": count if count != 2 else "two"})  # "two" breaks the schema

    for structured in (True, False):
        with FakeTeacher(extract, refuse=() if structured else ("response_format",)) as teacher:
            folder = tmp_path / f"structured-{structured}"
            spec = write_spec(folder, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
            _as_json_task(spec)
            result = api.build(spec, out=folder / "out", until="label")
            bodies = teacher.bodies
        label = result.stage("label")
        sent_format = [b.get("response_format") for b in bodies]
        if structured:
            assert all(f and f["type"] == "json_schema" for f in sent_format)
            assert sent_format[0]["json_schema"]["schema"]["required"] == ["item", "count"]
        else:  # refused once with a 400, then asked in the prompt alone
            assert sent_format[0] is not None and sent_format[-1] is None
        twos = sum(" of 2 " in t for t in texts)
        assert label.summary["reasked"] == twos and label.summary["fixed_by_reask"] == twos
        outputs = [json.loads(row["output"]) for row in _rows(label.artifact / "labeled.jsonl")]
        assert len(outputs) == len(texts) and all(isinstance(o["count"], int) for o in outputs)


def _as_json_task(spec: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"item": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["item", "count"],
    }
    items = {"positive": "kettle", "negative": "screen"}
    examples = [
        {"input": e["input"], "output": json.dumps({"item": items[e["output"]], "count": 1})}
        for e in yaml.safe_load(spec.read_text())["task"]["examples"]
    ]
    edit_spec(spec, {"task.output": {"type": "json", "schema": schema}, "task.examples": examples})


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_retry_after_is_read_in_seconds_milliseconds_or_as_a_date_and_capped() -> None:
    assert retry.retry_after_s({"retry-after": "2"}) == 2
    assert retry.retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry.retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412500.0) == 10
    assert retry.retry_after_s({"retry-after": "-5"}) == 0
    assert retry.retry_after_s({"retry-after": "86400"}) == retry.MAX_RETRY_AFTER_S
    assert retry.retry_after_s({"retry-after": "soon"}) is None
    assert retry.retry_after_s({}) is None


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap() -> None:
    import random

    rng = random.Random(0)
    for attempt, step in [(0, 0.5), (1, 1.0), (3, 4.0), (10, retry.BACKOFF_CAP_S)]:
        waits = [retry.backoff_s(attempt, rng) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits)
        assert max(waits) - min(waits) > step / 4  # spread out: workers do not retry in step


def test_an_endpoint_that_wants_max_completion_tokens_gets_it(tmp_path: Path, tiny_model: Path) -> None:
    texts = [f"review {i} was lovely" for i in range(12)]
    events: list[Event] = []
    with FakeTeacher(lambda t: "positive", refuse=("max_tokens",)) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        result = api.build(spec, out=tmp_path / "out", until="label", emit=events.append)
        bodies = teacher.bodies
    assert result.stage("label").summary["labeled"] == len(texts)
    assert bodies[-1]["max_completion_tokens"] == 256 and "max_tokens" not in bodies[-1]
    assert sum("endpoint refused max_tokens" in e.message for e in events) == 1  # said once, not per request


def test_an_endpoint_refusing_every_request_stops_the_build_early(tmp_path: Path, tiny_model: Path) -> None:
    texts = [f"review {i} was lovely" for i in range(200)]
    with FakeTeacher(lambda t: "positive", fault=lambda t, n: "422") as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out", until="label")
        sent = teacher.requests
    assert caught.value.code == "E408"
    assert "refused the first 10 requests" in caught.value.message and "HTTP 422: injected 422" in caught.value.message
    assert sent < 20  # not 200


def test_requests_share_kept_alive_connections(tmp_path: Path, tiny_model: Path) -> None:
    texts = [f"review {i} was lovely" for i in range(60)]
    with FakeTeacher(lambda t: "positive", delay_s=0.01) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        api.build(spec, out=tmp_path / "out", until="label")
        assert teacher.requests == 60 and teacher.connections <= 4  # max_concurrency: 4
