"""Latency summaries: nearest-rank percentiles of per-request milliseconds."""

from __future__ import annotations

import statistics


def percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {}
    ordered = sorted(values_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2), "n": len(ordered)}


def quantiles(values_ms: list[float], steps: int = 100) -> list[float]:
    """The nearest-rank percentiles 0, 1, ..., 100 (for `steps` 100) of per-request milliseconds: a latency
    distribution in a fixed size, which another can be combined with (`cascade_percentiles`)."""
    if not values_ms:
        return []
    ordered = sorted(values_ms)
    return [round(ordered[round(i / steps * (len(ordered) - 1))], 2) for i in range(steps + 1)]


def cascade_percentiles(student_q: list[float], teacher_q: list[float], escalation: float) -> dict[str, float]:
    """p50 and p95 of a cascade's latency: a request takes the student's time, and an escalated one (a share
    `escalation` of them) the teacher's on top. Each distribution is given by its `quantiles`; the two are
    taken as independent, so an escalated request's time is every (student, teacher) pair, equally likely."""
    weighted = [(s, (1 - escalation) / len(student_q)) for s in student_q]
    share = escalation / (len(student_q) * len(teacher_q))
    weighted += [(s + t, share) for s in student_q for t in teacher_q]
    weighted.sort()
    out, total = {}, 0.0
    targets = iter((("p50", 0.5), ("p95", 0.95)))
    name, target = next(targets)
    for value, weight in weighted:
        total += weight
        while total >= target - 1e-12:
            out[name] = round(value, 2)
            try:
                name, target = next(targets)
            except StopIteration:
                return out
    return out
