"""What every teacher paid per request shares, whatever its wire format: its settings, the journal, and the
budget each request holds its worst-case price against while in flight."""

from __future__ import annotations

from dataclasses import dataclass

from distillc.build.events import Sink
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.teacher.budget import Budget, Pricing, Reservation
from distillc.teacher.journal import Journal
from distillc.teacher.protocol import Messages


@dataclass
class PaidTeacher:
    """What a teacher that is paid per request works with: its settings, the journal, the budget."""

    teacher: TeacherIR
    task: TaskIR | None
    journal: Journal
    emit: Sink
    stage: str
    budget: Budget
    prices: Pricing | None  # None: the spec sets no price

    @property
    def capped(self) -> bool:
        """Whether requests hold their price against budget.max_usd before they go."""
        return self.prices is not None and self.budget.limited

    @property
    def probing(self) -> bool:
        """Whether one request must go first, alone: how the endpoint bills is not yet known."""
        return self.capped and not self.budget.calibrated

    def hold(self, messages: Messages) -> tuple[bool, Reservation | None]:
        """Whether a request may go, and what it holds against the cap meanwhile (None when uncapped)."""
        if not self.capped:
            return True, None
        assert self.prices is not None
        reservation = self.budget.reserve(self.prices.worst(messages))
        return reservation is not None, reservation
