"""`budget.max_usd`: one cap on everything a build folder pays its teacher, across runs.

- What was spent is what the journal holds: each paid answer records its price, so the answers of earlier
  runs, of generating inputs and of labeling all count. A run stopped by the cap sends nothing more on a
  re-run until the cap is raised.
- Each request in flight reserves the most it may cost: its prompt and `max_tokens` of answer at the
  spec's prices. It settles at what the endpoint billed.
- An endpoint may bill more than the prompt shows (reasoning models bill hidden tokens). The highest ratio
  of billed to reserved seen so far, kept in the journal, scales every later reservation, which is also
  never less than the most one answer has cost. Until an answer has shown how the endpoint bills,
  requests go out one at a time (through the Batch API: a batch of one first).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distillc.errors import DistillcError
from distillc.spec.ir import SpecIR, TeacherIR
from distillc.teacher.cost import Estimate, TokenCounter, has_price, usd
from distillc.teacher.protocol import Messages

if TYPE_CHECKING:
    from distillc.teacher.journal import Totals


@dataclass(frozen=True)
class Reservation:
    worst_usd: float  # the request's prompt and max_tokens at the spec's prices
    usd: float  # what is held: worst_usd scaled by the billing seen so far


class Pricing:
    """What one teacher's requests may cost, and what an answer did cost."""

    def __init__(self, teacher: TeacherIR) -> None:
        self.teacher = teacher
        self.counter: TokenCounter | None = None  # loaded when a request is first reserved for

    def worst(self, messages: Messages) -> float:
        self.counter = self.counter or TokenCounter(self.teacher)
        return usd(self.teacher, self.counter.prompt(messages), self.teacher.max_tokens)

    def paid(self, usage: dict[str, int]) -> float:
        return usd(self.teacher, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))

    def record(self, usage: dict[str, int], reservation: Reservation | None) -> dict[str, float]:
        """The price fields a journal entry keeps: what it cost, and what it was expected to cost at most."""
        price = {"usd": round(self.paid(usage), 9)}
        if reservation is not None:
            price["worst_usd"] = round(reservation.worst_usd, 9)
        return price


def pricing(teacher: TeacherIR) -> Pricing | None:
    """None for a teacher without prices: nothing it answers costs anything the budget could count."""
    return Pricing(teacher) if has_price(teacher) else None


class Budget:
    """Reservations against the cap, shared by every request of one connected teacher."""

    def __init__(self, max_usd: float, spent: float = 0.0, scale: float | None = None, most: float = 0.0) -> None:
        self.max_usd = max_usd  # 0: no cap
        self.spent = spent
        self.scale = scale  # billed / worst case, the highest seen; None before any answer
        self.most = most  # the most one answer has cost
        self.reserved = 0.0
        self.asked = 0  # reservations asked for in this run
        self.unsent = 0
        self.unsent_usd = 0.0  # what the refused requests would have held
        self._lock = threading.Lock()

    @classmethod
    def of_journal(cls, max_usd: float, journal: Totals) -> Budget:
        return cls(max_usd, journal.spent_usd, journal.billing_scale, journal.most_usd)

    @property
    def limited(self) -> bool:
        return self.max_usd > 0

    @property
    def calibrated(self) -> bool:
        """Whether an answer has shown how the endpoint bills against what was reserved."""
        return self.scale is not None

    def reserve(self, worst_usd: float) -> Reservation | None:
        """Hold what the request may cost, or None (and count it unsent) when that would cross the cap."""
        held = max(worst_usd * max(1.0, self.scale or 1.0), self.most)
        with self._lock:
            self.asked += 1
            if self.limited and self.spent + self.reserved + held > self.max_usd:
                self.unsent += 1
                self.unsent_usd += held
                return None
            self.reserved += held
        return Reservation(worst_usd, held)

    def settle(self, reservation: Reservation | None, paid_usd: float) -> None:
        """An answer came: release its hold, count what it cost, and learn how the endpoint bills.
        `reservation` is None for an answer reserved by an earlier run (a resumed batch)."""
        with self._lock:
            self.spent += paid_usd
            self.most = max(self.most, paid_usd)
            if reservation is None:
                return
            self.reserved -= reservation.usd
            if reservation.worst_usd > 0:
                self.scale = max(self.scale or 0.0, paid_usd / reservation.worst_usd)

    def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            with self._lock:
                self.reserved -= reservation.usd

    def stop_if_over(self, doing: str = "") -> None:
        """E503 when requests went unsent for the cap: how much was spent in all, and what raising it buys."""
        if not self.unsent:
            return
        enough = math.ceil((self.spent + self.unsent_usd) * 100) / 100
        raise DistillcError(
            "E503",
            f"budget.max_usd ${self.max_usd:g} reached{doing}: {self.unsent} of {self.asked} teacher requests were "
            f"not sent; ${self.spent:.4f} spent in all in this build folder, over every run",
            help=f"the answers received are journaled and count toward the cap on every run, so a re-run sends "
            f"nothing more until it is raised; the {self.unsent} unsent requests may cost up to "
            f"${self.unsent_usd:.4f} more: budget.max_usd: {enough:.2f} covers them",
        )


def refuse_over_estimate(spec: SpecIR, planned: Estimate | None, spent: float) -> None:
    """E502 before anything is sent, when labeling what `planned` counts is expected to cross the cap."""
    if planned is None or not planned.requests:
        return
    if spent + planned.usd > spec.budget.max_usd:
        already = f" after ${spent:.4f} already spent in this build folder" if spent else ""
        raise DistillcError(
            "E502",
            f"labeling {planned.requests} inputs is estimated at ${planned.usd:.4f}{already}, over budget.max_usd "
            f"${spec.budget.max_usd:g}; nothing was sent",
            help="raise budget.max_usd, or lower inputs.source.limit",
        )
