"""Asking the teacher, whichever provider serves it: what identifies a request in the journal, and the
one place a teacher is connected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillc.build.events import Sink
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.teacher import budget, local, openai_client
from distillc.teacher.batch import BatchTeacher
from distillc.teacher.journal import Journal
from distillc.teacher.protocol import Messages, TeacherClient


def identity(teacher: TeacherIR, task: TaskIR) -> tuple[str, dict[str, Any]]:
    """(model id, parameters): with the messages, what an answer depends on, hence its journal key. An
    endpoint's model is named with its endpoint: the same model name behind a mock server and behind the
    real provider are different teachers, and answers from one are never replayed for the other."""
    if teacher.provider == "local":
        return f"local:{teacher.model}", local.params(teacher, task)
    return f"{teacher.model}@{teacher.base_url.rstrip('/')}", openai_client.params(teacher, task)


def connect(
    teacher: TeacherIR,
    task: TaskIR,
    journal: Journal,
    emit: Sink,
    stage: str,
    max_usd: float = 0.0,
    reference: Sequence[Messages] = (),
) -> TeacherClient:
    """The teacher for one stage. `max_usd` caps what the build folder's journal holds in all (see
    budget.py); `reference` calibrates a local teacher's label scores."""
    if teacher.provider == "local":
        return local.LocalTeacher(teacher, task, journal, emit, stage, reference)
    prices = budget.pricing(teacher)
    cap = budget.Budget.of_journal(max_usd if prices else 0.0, journal.entries)
    if teacher.batch:
        return BatchTeacher(teacher, task, journal, emit, stage, cap, prices)
    return openai_client.EndpointTeacher(teacher, task, journal, emit, stage, cap, prices)
