"""Asking the teacher, whichever provider serves it (distillc.teacher.providers): what identifies a request
in the journal, and the one place a teacher is connected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillc.build.events import Sink
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.teacher.journal import Journal
from distillc.teacher.protocol import Messages, Provider, TeacherClient
from distillc.teacher.providers import PROVIDERS


def provider(teacher: TeacherIR) -> Provider:
    return PROVIDERS[teacher.provider]


def identity(teacher: TeacherIR, task: TaskIR) -> tuple[str, dict[str, Any]]:
    """(model id, parameters): with the messages, what an answer depends on, hence its journal key."""
    return provider(teacher).identity(teacher, task)


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
    budget.py); `reference` is a sample of the requests for a provider that calibrates on one."""
    return provider(teacher).connect(teacher, task, journal, emit, stage, max_usd, reference)


def reference_size(teacher: TeacherIR) -> int:
    """How many requests the provider calibrates on (a local teacher's label scores); 0 for none."""
    return provider(teacher).reference_size
