"""Asking the teacher, whichever provider serves it: what identifies a request in the journal, and sending."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillc.events import Sink
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.teacher import batch as openai_batch
from distillc.teacher import local, openai_client
from distillc.teacher.journal import Journal

Messages = list[dict[str, str]]


def identity(teacher: TeacherIR, task: TaskIR) -> tuple[str, dict[str, Any]]:
    """(model id, parameters): with the messages, what an answer depends on, hence its journal key. An
    endpoint's model is named with its endpoint: the same model name behind a mock server and behind the
    real provider are different teachers, and answers from one are never replayed for the other."""
    if teacher.provider == "local":
        return f"local:{teacher.model}", local.params(teacher, task)
    return f"{teacher.model}@{teacher.base_url.rstrip('/')}", openai_client.params(teacher, task)


def complete(
    teacher: TeacherIR,
    task: TaskIR,
    pending: list[tuple[str, Messages]],
    journal: Journal,
    emit: Sink,
    reference: Sequence[Messages] = (),
    spending: openai_client.Spending | None = None,
    stage: str = "label",
) -> dict[str, str]:
    """Answer and journal every pending request; returns failures (key -> reason).

    `reference` calibrates a local teacher's label scores; `spending` guards an endpoint's budget. With
    `teacher.batch` the requests go through the Batch API (generation's teacher never has it).
    """
    if teacher.provider == "local":
        return local.complete(teacher, task, pending, journal, emit, reference, stage)
    if teacher.batch:
        return openai_batch.complete(teacher, task, pending, journal, emit, stage)
    return openai_client.complete(teacher, pending, journal, emit, spending, task, stage)
