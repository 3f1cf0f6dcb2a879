"""Labeling through the OpenAI Batch API (`teacher.batch: true`): half the price, answers within 24 h.

Requests go up as one JSONL file, each with its journal key as `custom_id`. What was submitted is
recorded (fsync'd) at each step, so a build killed at any moment resumes rather than pays again:

    {"file": id, "keys": [...]}     the input file is uploaded
    {"file": id, "batch": id}       the batch is created
    {"batch": id, "closed": true}   its answers are in the journal

On a re-run, an open batch is polled again; an uploaded file without a recorded batch is matched to
the endpoint's batches by input file (the build may have died between creating and recording it);
only requests that are in no batch and not in the journal are submitted.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillc.build.events import Event
from distillc.errors import DistillcError
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.teacher import retry
from distillc.teacher.budget import Reservation
from distillc.teacher.journal import Journal, drop_torn_tail, journal_entry
from distillc.teacher.paid import PaidTeacher
from distillc.teacher.protocol import OVER_BUDGET, Request
from distillc.teacher.providers.openai_compatible import Endpoint, RequestFailed, connect, params, parse_completion

ENDED = ("completed", "failed", "expired", "cancelled")
MAX_REQUESTS = 50_000  # the Batch API's limit per batch; more requests go in several batches


def state_path(journal: Journal) -> Path:
    return journal.path.parent / "batches.jsonl"


class Submitted:
    """The record of what was uploaded and submitted, read back on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, list[str]] = {}  # file id -> request keys
        self.batch_of: dict[str, str] = {}  # file id -> batch id
        self.closed: set[str] = set()  # batch ids whose answers are journaled
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line: that step is simply redone
                if "keys" in record:
                    self.files[record["file"]] = record["keys"]
                elif "file" in record:
                    self.batch_of[record["file"]] = record["batch"]
                elif record.get("closed"):
                    self.closed.add(record["batch"])

    def record(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(self.path)  # a crash mid-write: the next record starts on a line of its own
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def open_files(self) -> list[str]:
        return [f for f in self.files if self.batch_of.get(f) not in self.closed]

    def keys_in_open_batches(self) -> set[str]:
        return {key for f in self.open_files() for key in self.files[f]}


@dataclass
class BatchTeacher(PaidTeacher):
    """The teacher through the Batch API. Every request of a submission holds its worst-case price
    against the budget first; those that do not fit are not submitted."""

    held: dict[str, Reservation] = field(default_factory=dict)  # key -> what its request holds, until answered

    def complete(self, requests: Sequence[Request]) -> dict[str, str]:
        """Answer every request through batches; journal each answer. Returns failures: key -> reason."""
        submitted = Submitted(state_path(self.journal))
        failures: dict[str, str] = {}
        if requests or submitted.open_files():
            try:
                asyncio.run(self._complete(list(requests), submitted, failures))
            except RequestFailed as exc:
                raise DistillcError(
                    "E406",
                    f"the Batch API call failed: {exc.reason}",
                    help="re-run the build: batches already submitted are resumed, not paid for again",
                ) from None
        self.budget.stop_if_over()
        return failures

    async def _complete(self, pending: list[Request], submitted: Submitted, failures: dict[str, str]) -> None:
        async with connect(self.teacher, self.emit, self.stage) as endpoint:
            for file_id in submitted.open_files():  # resume what a previous run submitted
                batch_id = submitted.batch_of.get(file_id) or await _adopt_or_create(endpoint, submitted, file_id)
                self.emit(Event("info", self.stage, f"resuming batch {batch_id}"))
                failures |= await self._finish(endpoint, submitted, batch_id, submitted.files[file_id])
            waiting = submitted.keys_in_open_batches()
            answered = self.journal.answered(k for k, _ in pending)
            missing = [(k, m) for k, m in pending if k not in answered and k not in failures and k not in waiting]
            if self.probing and len(missing) > 1:
                # How this endpoint bills is unknown: a batch of one shows it before the rest is submitted.
                self.emit(Event("info", self.stage, "one request goes first, to see how the endpoint bills"))
                await self._submit_and_finish(endpoint, submitted, missing[:1], failures)
                missing = missing[1:]
            await self._submit_and_finish(endpoint, submitted, missing, failures)

    async def _submit_and_finish(
        self, endpoint: Endpoint, submitted: Submitted, requests: list[Request], failures: dict[str, str]
    ) -> None:
        affordable = []
        for key, messages in requests:
            allowed, reservation = self.hold(messages)
            if not allowed:
                failures[key] = OVER_BUDGET
                continue
            if reservation is not None:
                self.held[key] = reservation
            affordable.append((key, messages))
        batches = []
        for start in range(0, len(affordable), MAX_REQUESTS):  # submit every chunk, then wait for them all
            chunk = affordable[start : start + MAX_REQUESTS]
            file_id = await _upload(endpoint, self.teacher, self.task, chunk)
            submitted.record({"file": file_id, "keys": [k for k, _ in chunk]})
            submitted.files[file_id] = [k for k, _ in chunk]
            batches.append((await _create(endpoint, submitted, file_id), file_id))
            self.emit(Event("info", self.stage, f"submitted batch {batches[-1][0]} with {len(chunk)} requests"))
        for batch_id, file_id in batches:
            failures |= await self._finish(endpoint, submitted, batch_id, submitted.files[file_id])

    async def _finish(self, endpoint: Endpoint, submitted: Submitted, batch_id: str, keys: list[str]) -> dict[str, str]:
        """Wait for the batch, journal its answers at their price, and settle what they held."""
        answers, failures = await _results(endpoint, submitted, batch_id, keys)
        settled = []
        for answer in answers:
            reservation = self.held.pop(answer["key"], None)  # None: submitted by an earlier run
            if self.prices:
                answer.update(self.prices.record(answer["usage"], reservation))
            settled.append((reservation, answer.get("usd", 0.0)))
        self.journal.append_many(answers)  # on disk before it counts
        submitted.record({"batch": batch_id, "closed": True})
        submitted.closed.add(batch_id)
        for reservation, paid in settled:
            self.budget.settle(reservation, paid)
        for key in failures:
            self.budget.release(self.held.pop(key, None))
        return failures


async def _upload(endpoint: Endpoint, teacher: TeacherIR, task: TaskIR | None, requests: list[Request]) -> str:
    import aiohttp

    extra = params(teacher, task)
    lines = "".join(
        json.dumps(
            {
                "custom_id": key,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": teacher.model, "messages": messages, **extra},
            },
            ensure_ascii=False,
        )
        + "\n"
        for key, messages in requests
    ).encode("utf-8")

    def form() -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("purpose", "batch")
        data.add_field("file", lines, filename="requests.jsonl", content_type="application/jsonl")
        return data

    return await endpoint.send("POST", "/files", lambda body: json.loads(body)["id"], form=form)


async def _create(endpoint: Endpoint, submitted: Submitted, file_id: str) -> str:
    payload = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = await endpoint.send("POST", "/batches", lambda body: json.loads(body)["id"], payload=payload)
    submitted.record({"file": file_id, "batch": batch_id})
    submitted.batch_of[file_id] = batch_id
    return batch_id


async def _adopt_or_create(endpoint: Endpoint, submitted: Submitted, file_id: str) -> str:
    """The build died between creating a batch and recording it: find that batch by its input file."""
    listed = await endpoint.send("GET", "/batches?limit=100", lambda body: json.loads(body)["data"])
    for batch in listed:
        if batch.get("input_file_id") == file_id:
            submitted.record({"file": file_id, "batch": batch["id"]})
            submitted.batch_of[file_id] = batch["id"]
            return str(batch["id"])
    return await _create(endpoint, submitted, file_id)


async def _results(
    endpoint: Endpoint, submitted: Submitted, batch_id: str, keys: list[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Poll until the batch ends; its answers (journal entries) and the requests it did not answer."""
    teacher = endpoint.teacher
    while True:
        batch = await endpoint.send("GET", f"/batches/{batch_id}", json.loads)
        counts = batch.get("request_counts") or {}
        endpoint.emit(
            Event(
                "progress",
                endpoint.stage,
                f"batch {batch_id}: {batch['status']}, {counts.get('completed', 0)}/{len(keys)} answered",
                {"done": counts.get("completed", 0), "total": len(keys), "status": batch["status"]},
            )
        )
        if batch["status"] in ENDED:
            break
        await retry.CLOCK.sleep(teacher.batch_poll_s)
    answers: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for file_key in ("output_file_id", "error_file_id"):
        if batch.get(file_key):
            content = await endpoint.send("GET", f"/files/{batch[file_key]}/content", bytes)
            _read_results(content, answers, failures)
    answered = {a["key"] for a in answers}
    for key in keys:
        if key not in answered and key not in failures:
            failures[key] = f"batch {batch_id} ended '{batch['status']}' without an answer"
    return answers, failures


def _read_results(content: bytes, answers: list[dict[str, Any]], failures: dict[str, str]) -> None:
    for line in content.decode("utf-8").splitlines():
        if not line.strip():
            continue
        result = json.loads(line)
        key, response = result["custom_id"], result.get("response") or {}
        if response.get("status_code") == 200:
            try:
                answer = parse_completion(response["body"])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                failures[key] = f"malformed batch answer: {exc}"
                continue
            answers.append(journal_entry(key, answer.text, answer.usage, logprobs=answer.logprobs))
        else:
            error = result.get("error") or (response.get("body") or {}).get("error") or {}
            failures[key] = f"batch error {response.get('status_code', '')}: {error.get('message', error)}".strip()
