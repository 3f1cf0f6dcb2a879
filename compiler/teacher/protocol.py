"""What every teacher takes and gives: chat requests keyed for the journal, answered into the journal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

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
