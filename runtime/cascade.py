"""The cascade: the student answers what it is sure of, and hands the rest to a teacher endpoint.

The build chose the confidence threshold (distillc.quality.confidence) and wrote it to package.json with the
endpoint, the teacher's prompt and what its answer must be. Here:
- a student answer below the threshold is asked of the teacher (OpenAI-compatible chat completions), with
  the key read from the environment variable the spec named, at start-up; it is never logged or written;
- each teacher call has a deadline inside the request's own (`timeout_s`, and never past the request's
  deadline), bounded retries, and a circuit breaker: after `BREAKER_FAILURES` failed calls in a row the
  teacher is not called for `BREAKER_COOLDOWN_S`, then one trial call decides whether it closes again;
- whenever the teacher cannot answer (down, slow, an error, an answer outside the task's contract, the
  breaker open) the student's answer is returned, routed `fallback`: a request never fails because the
  teacher did;
- at most `max_pending` escalations are in progress at once (the server's queue size): past that, a
  low-confidence request gets 429 rather than joining an unbounded backlog of teacher calls;
- `shadow_share` of the requests the student answers are also asked of the teacher in the background: the
  response never waits for it, and a shadow call is dropped when the teacher is busy (half the room is
  kept for escalations) or its breaker is not closed. Their agreement, and the share of requests
  escalated, are exported over a rolling window beside what the build expected, for an alert to watch;
- with a capture folder, every escalated and shadowed pair is appended to a file in the `chat_log` format
  the inputs stage reads, so the next build learns from them (`PairLog`).

A circuit breaker is a few lines of state; the well-kept Python ones (pybreaker) wrap synchronous calls, and
their asynchronous path needs Tornado, so this one is written here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distillc_runtime.answers import Agreement, label_field, match_label, strip_fence
from distillc_runtime.confidence import Answer

logger = logging.getLogger("distillc_runtime")

BREAKER_FAILURES = 5  # failed teacher calls in a row that open the breaker
BREAKER_COOLDOWN_S = 10.0  # how long it stays open before one trial call
RETRY_BACKOFF_S = 0.05  # first retry's wait; doubled each time, always within the call's deadline
RETRIED_STATUS = {408, 409, 429, 500, 502, 503, 504}
RECENT_REQUESTS = 1000  # the rolling window the escalation rate is taken over
RECENT_SHADOWS = 500  # and the shadowed pairs' agreement
CAPTURE_MAX_BYTES = 1 << 30  # a capture file stops growing here (with one warning), so a disk never fills
FSYNC_EVERY_S = 1.0  # a crash loses at most this much of the capture file


class EscalationsFull(Exception):
    """As many requests wait for the teacher as the server queues: try again later (429)."""


class TeacherFailed(Exception):
    """The teacher gave no usable answer; the message says why (never the key, never the input)."""


@dataclass(frozen=True)
class CascadeConfig:
    """package.json's `cascade`, as the build wrote it."""

    threshold: float
    base_url: str
    model: str
    api_key_env: str
    timeout_s: float
    max_retries: int
    messages: list[dict[str, str]]  # the teacher's prompt before the input: system prompt and examples
    response_format: dict[str, Any] | None
    output_type: str  # label | json | text: what a usable teacher answer is
    labels: list[str]
    expected_escalation: float
    expected_agreement: float
    agreement: dict[str, Any] | None = None  # {"metric", "at_least"}: when a shadowed answer agrees
    breaker_failures: int = BREAKER_FAILURES
    breaker_cooldown_s: float = BREAKER_COOLDOWN_S
    shadow_share: float = 0.0
    instructions: str = ""  # the spec's, as the captured pairs' system prompt (what the inputs stage expects)

    @functools.cached_property
    def agrees(self) -> Agreement:
        """Whether a student's answer agrees with the teacher's (already `usable`), as the build counted it when
        it chose the threshold: package.json's `cascade.agreement`."""
        rule = self.agreement or {}
        return Agreement(self.output_type, rule.get("metric", "exact_match"), rule.get("at_least", 1.0))

    @classmethod
    def from_package(cls, info: dict[str, Any]) -> CascadeConfig | None:
        section = info.get("cascade")
        if not section:
            return None
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in section.items() if key in fields})


class Breaker:
    """Closed: calls go through. Open after `failures` failures in a row: calls are refused until `cooldown_s`
    has passed. Then half-open: one trial call at a time; its success closes the breaker, its failure opens it
    again."""

    def __init__(self, failures: int = BREAKER_FAILURES, cooldown_s: float = BREAKER_COOLDOWN_S) -> None:
        self.failures_to_open, self.cooldown_s = failures, cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False  # a half-open trial call is in progress

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial:
            self.trial = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.failures_to_open:
            self.opened_at, self.trial = time.monotonic(), False


def usable(config: CascadeConfig, text: str) -> str | None:
    """The teacher's answer in the form the student gives it, or None when it breaks the task's contract as
    the build read it (answers.py): a label outside the set, JSON that does not parse, an empty text."""
    text = text.strip()
    if config.output_type == "label":
        return match_label(tuple(config.labels), label_field(text) or text)[0]
    if config.output_type == "json":
        try:
            return json.dumps(json.loads(strip_fence(text)), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            return None
    return text or None


class PairLog:
    """Escalated and shadowed pairs, appended to `folder`/served-<start>-<pid>.jsonl as `chat_log` records (the
    request's messages, the teacher's answer as a completion) with the route and the student's answer beside
    them. Flushed per record, fsync'd at most every FSYNC_EVERY_S; the file stops at CAPTURE_MAX_BYTES."""

    def __init__(self, folder: Path, model: str, instructions: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"served-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
        self.file = self.path.open("ab")
        self.model, self.instructions = model, instructions
        self.synced = time.monotonic()
        self.full = False

    def add(self, text: str, teacher: str, route: str, student: Answer) -> None:
        if self.full:
            return
        record = {
            "request": {
                "model": self.model,
                "messages": [{"role": "system", "content": self.instructions}, {"role": "user", "content": text}],
            },
            "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": teacher}}]},
            "status": "success",
            "route": route,
            "student": {"output": student.text, "confidence": round(student.confidence, 6)},
            "time": round(time.time(), 3),
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        if self.file.tell() + len(line) > CAPTURE_MAX_BYTES:
            self.full = True
            logger.warning("cascade: %s reached %d bytes; no more pairs are captured", self.path, CAPTURE_MAX_BYTES)
            return
        self.file.write(line)
        self.file.flush()
        if time.monotonic() - self.synced >= FSYNC_EVERY_S:
            os.fsync(self.file.fileno())
            self.synced = time.monotonic()

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class Cascade:
    def __init__(self, config: CascadeConfig, max_pending: int, metrics: Any, capture: Path | None = None) -> None:
        import httpx2

        self.config, self.max_pending, self.metrics = config, max_pending, metrics
        self.breaker = Breaker(config.breaker_failures, config.breaker_cooldown_s)
        self.pending = 0
        self.log = PairLog(capture, config.model, config.instructions) if capture else None
        self.shadows: set[asyncio.Task] = set()  # held, so a running shadow call is not garbage-collected
        self.recent_escalated: deque[bool] = deque(maxlen=RECENT_REQUESTS)
        self.recent_agreed: deque[bool] = deque(maxlen=RECENT_SHADOWS)
        metrics.watch_recent(
            lambda: sum(self.recent_escalated) / len(self.recent_escalated) if self.recent_escalated else 0.0,
            lambda: sum(self.recent_agreed) / len(self.recent_agreed) if self.recent_agreed else float("nan"),
        )
        key = os.environ.get(config.api_key_env, "")
        if not key:
            logger.warning("cascade: $%s is not set; the teacher is called without a key", config.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx2.AsyncClient(
            headers=headers,
            timeout=config.timeout_s,
            limits=httpx2.Limits(max_connections=max_pending, max_keepalive_connections=min(max_pending, 32)),
            trust_env=False,  # the endpoint is the spec's; no proxy or netrc from this machine's environment
        )
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        metrics.watch_breaker(lambda: {"closed": 0.0, "half_open": 0.5, "open": 1.0}[self.breaker.state])

    async def route(self, text: str, answer: Answer, deadline: float) -> Answer:
        """The answer to return for `text`: the student's when it is sure enough, else the teacher's, else
        (the teacher could not answer before `deadline`, a time.monotonic()) the student's as a fallback."""
        escalate = answer.confidence < self.config.threshold
        self.recent_escalated.append(escalate)
        if not escalate:
            if self.config.shadow_share and random.random() < self.config.shadow_share:
                self._shadow(text, answer)
            return replace(answer, route="student")
        if self.pending >= self.max_pending:
            raise EscalationsFull
        if not self.breaker.allow():
            self.metrics.teacher_errors.labels("breaker_open").inc()
            return replace(answer, route="fallback")
        self.pending += 1
        started = time.monotonic()
        try:
            said = await self._ask(text, deadline)
        except TeacherFailed as failure:
            self.breaker.failed()
            logger.info("cascade: teacher failed (%s); the student's answer is returned", failure)
            return replace(answer, route="fallback")
        finally:
            self.pending -= 1
            self.metrics.teacher_latency.observe(time.monotonic() - started)
        self.breaker.succeeded()
        if self.log is not None:
            self.log.add(text, said, "teacher", answer)
        return Answer(text=said, confidence=answer.confidence, route="teacher")

    def _shadow(self, text: str, answer: Answer) -> None:
        """Ask the teacher too, in the background; dropped when the teacher is busy or its breaker is not closed."""
        if self.pending >= self.max_pending // 2 or self.breaker.state != "closed":
            self.metrics.shadows.labels("dropped").inc()
            return
        self.pending += 1
        task = asyncio.get_running_loop().create_task(self._compare(text, answer))
        self.shadows.add(task)
        task.add_done_callback(self.shadows.discard)

    async def _compare(self, text: str, answer: Answer) -> None:
        try:
            said = await self._ask(text, time.monotonic() + self.config.timeout_s)
        except TeacherFailed:
            self.breaker.failed()
            self.metrics.shadows.labels("failed").inc()
            return
        finally:
            self.pending -= 1
        self.breaker.succeeded()
        agreed = self.config.agrees(said, answer.text)
        self.recent_agreed.append(agreed)
        self.metrics.shadows.labels("agree" if agreed else "disagree").inc()
        if self.log is not None:
            self.log.add(text, said, "shadow", answer)

    async def _ask(self, text: str, deadline: float) -> str:
        import httpx2

        config = self.config
        body: dict[str, Any] = {
            "model": config.model,
            "messages": [*config.messages, {"role": "user", "content": text}],
            "temperature": 0,
        }
        if config.response_format:
            body["response_format"] = config.response_format
        wait = RETRY_BACKOFF_S
        for attempt in range(config.max_retries + 1):
            left = min(deadline - time.monotonic(), config.timeout_s)
            if left <= 0:
                self.metrics.teacher_errors.labels("timeout").inc()
                raise TeacherFailed("no time left for the teacher")
            last = attempt == config.max_retries
            try:
                reply = await asyncio.wait_for(self.client.post(self.url, json=body, timeout=left), left)
            except (TimeoutError, asyncio.TimeoutError, httpx2.TimeoutException):
                self.metrics.teacher_errors.labels("timeout").inc()
                raise TeacherFailed(f"no answer within {left:.2f} s") from None
            except httpx2.HTTPError as error:
                self.metrics.teacher_errors.labels("connection").inc()
                if last:
                    raise TeacherFailed(f"cannot reach the teacher: {type(error).__name__}") from None
            else:
                if reply.status_code == 200:
                    said = usable(config, _content(reply))
                    if said is None:
                        self.metrics.teacher_errors.labels("invalid_answer").inc()
                        raise TeacherFailed("the teacher's answer is outside the task's contract")
                    return said
                self.metrics.teacher_errors.labels(f"http_{reply.status_code}").inc()
                if reply.status_code not in RETRIED_STATUS or last:
                    raise TeacherFailed(f"the teacher answered HTTP {reply.status_code}")
            await asyncio.sleep(max(0.0, min(wait, deadline - time.monotonic())))
            wait *= 2
        raise TeacherFailed("no retries left")  # not reached: the last attempt returns or raises

    async def close(self) -> None:
        for task in list(self.shadows):
            task.cancel()
        await self.client.aclose()
        if self.log is not None:
            self.log.close()


def _content(reply: Any) -> str:
    try:
        return str(reply.json()["choices"][0]["message"]["content"] or "")
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
