"""What every teacher takes and gives: chat requests keyed for the journal, answered into the journal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from distillc.build.events import Sink
    from distillc.spec.ir import TaskIR, TeacherIR
    from distillc.teacher.journal import Journal

Messages = list[dict[str, str]]
Request = tuple[str, Messages]  # (journal key, chat messages)
OVER_BUDGET = "not sent: budget reached"


class TeacherClient(Protocol):
    """A teacher connected once (`distillc.teacher.client.connect`): local, an OpenAI-compatible endpoint,
    or the Batch API."""

    def complete(self, requests: Sequence[Request]) -> dict[str, str]:
        """Answer every request and journal each answer before it counts; returns the failures (key ->
        reason). Raises E503 when the budget left requests unsent, after journaling what was answered."""
        ...


@runtime_checkable
class MeasuresLatency(Protocol):
    """A capability some teachers have: answering requests one at a time here, so that their latency can be
    measured as the student's is (a teacher in this process). Endpoints' latency comes from the journal."""

    def latencies(self, requests: Sequence[Request]) -> list[float]:
        """Seconds per request, answered one at a time."""
        ...

    def parameters(self) -> int:
        """The teacher model's parameter count."""
        ...


class Provider(Protocol):
    """A kind of teacher (`teacher.provider`): one module each under distillc.teacher.providers."""

    name: str
    reference_size: int  # requests it calibrates on before answering (see client.reference_size)

    def identity(self, teacher: TeacherIR, task: TaskIR) -> tuple[str, dict[str, Any]]:
        """(model id, parameters): with the messages, what an answer depends on, hence its journal key."""
        ...

    def connect(
        self,
        teacher: TeacherIR,
        task: TaskIR,
        journal: Journal,
        emit: Sink,
        stage: str,
        max_usd: float,
        reference: Sequence[Messages],
    ) -> TeacherClient:
        """The teacher for one stage, holding its answers to `max_usd` in all where it is paid."""
        ...
