"""What a score alone does not say: answers that are degenerate, and a held-out set too small to judge by."""

from __future__ import annotations

from typing import Any

from distillc.spec.ir import TaskIR
from distillc.task import task_type
from distillc.task.base import Pairs

TARGET_HALF_WIDTH = 0.05  # an interval this narrow lets a gate separate students 0.1 apart


def degenerate(task: TaskIR, pairs: Pairs) -> list[str]:
    """Warnings about the student's answers: empty ones, repetition loops, and what the task type checks
    (one label for everything)."""
    warnings = []
    n = len(pairs)
    empty = sum(1 for _, p in pairs if not p.strip())
    if empty:
        warnings.append(f"{empty} of {n} answers are empty")
    loops = sum(1 for _, p in pairs if repeats(p))
    if loops:
        warnings.append(f"{loops} of {n} answers repeat themselves (a phrase of 3 words makes up most of them)")
    return warnings + task_type(task).degenerate(task, pairs)


def repeats(text: str) -> bool:
    """A loop: an answer of 12 words or more whose 3-word phrases are mostly repeats of a few."""
    words = text.split()
    if len(words) < 12:
        return False
    phrases = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(set(phrases)) / len(phrases) < 0.5


def small_holdout(metric: str, gate: dict[str, Any], n: int) -> str | None:
    """A warning when the gated metric's 95% interval is too wide for its gate to mean much."""
    low, high = gate["interval"]
    half = (high - low) / 2
    if half <= TARGET_HALF_WIDTH:
        return None
    needed = int(n * (half / TARGET_HALF_WIDTH) ** 2 + 0.5)
    return (
        f"the held-out set is small: {n} inputs give {metric} {gate['value']:.3f} a 95% interval of "
        f"[{low:.3f}, {high:.3f}] (±{half:.2f}); about {needed} held-out inputs would narrow it to "
        f"±{TARGET_HALF_WIDTH} (more inputs, or a larger evaluation.holdout)"
    )
