"""The report's headline: the shipped student against its teacher, as measured by this build.

Quality is the student's score against the teacher's answers on held-out inputs (the teacher is the
reference). Latency: the shipped variant's p50/p95 from verify, the teacher's from the label stage
(distillc.teacher.speed). Cost per 1,000 requests: the teacher's journaled dollars where the spec prices
it; machine time at `deploy.usd_per_hour` for the student (at its measured batched throughput) and for a
local teacher (at its batched compute per answer while labeling).
"""

from __future__ import annotations

from typing import Any

from distillc.quality.latency import cascade_percentiles
from distillc.spec.ir import SpecIR


def headline(report: dict[str, Any], spec: SpecIR) -> dict[str, Any] | None:
    """None until the build has chosen a variant (a failed or partial build has no headline)."""
    gate, verify, label = report.get("gate"), report.get("verify"), report.get("label")
    if not (gate and verify and label):
        return None
    shipped = next(v for v in verify["variants"] if v["name"] == gate["variant"])
    per_hour = spec.deploy.usd_per_hour
    batch = shipped.get("batch")
    throughput = batch["inputs_per_s"] if batch else 1000 / shipped["p50_ms"]
    student_seconds = 1000 / throughput
    student = {
        "name": f"{spec.student.base_model} · {shipped['name']} · {shipped['layers']} layers"
        if shipped.get("kind", "decoder") == "decoder"
        else f"linear classifier over TF-IDF features · {shipped['parameters']:,} weights",
        "score": shipped["score"],
        "interval": shipped["interval"],
        "p50_ms": shipped["p50_ms"],
        "p95_ms": shipped["p95_ms"],
        "seconds_per_1k": round(student_seconds, 2),
        "usd_per_1k": _machine_usd(student_seconds, per_hour),
        "bytes": (report.get("package") or {}).get("bytes", shipped["bytes"]),
    }
    speed = label.get("teacher") or {}
    latency = speed.get("latency_ms") or {}
    local = spec.teacher.provider == "local"
    teacher_seconds = 1000 * speed["seconds_per_answer"] if local and speed.get("seconds_per_answer") else None
    if speed.get("usd_per_answer") is not None:
        teacher_usd = _significant(1000 * speed["usd_per_answer"])
    else:
        teacher_usd = _machine_usd(teacher_seconds, per_hour) if teacher_seconds else None
    teacher = {
        "name": f"{spec.teacher.model} ({'local' if local else 'endpoint'})",
        "p50_ms": latency.get("p50"),
        "p95_ms": latency.get("p95"),
        "latency_measured": latency.get("measured"),
        "seconds_per_1k": round(teacher_seconds, 2) if teacher_seconds else None,
        "usd_per_1k": teacher_usd,
        "parameters": speed.get("parameters"),
    }
    cascade = _cascade(gate.get("cascade"), shipped, speed, student, teacher)
    return {
        "metric": verify["metric"],
        "n": verify["n"],
        "measured_with": verify["measured_with"],
        "usd_per_hour": per_hour or None,
        "student": student,
        "teacher": teacher,
        "faster": _ratio(teacher["p50_ms"], student["p50_ms"]),
        "cheaper": _ratio(teacher["usd_per_1k"], student["usd_per_1k"]),
    } | ({"cascade": cascade} if cascade else {})


def _cascade(
    point: dict[str, Any] | None, shipped: dict[str, Any], speed: dict[str, Any], student: dict, teacher: dict
) -> dict[str, Any] | None:
    """The cascade the gate chose, and what it costs: every request pays the student, an escalated one the
    teacher too. Latency combines the student's measured distribution (verify) with the teacher's (measured
    while labeling, from the build's teacher); cost adds the teacher's dollars for the escalated share."""
    if not point:
        return None
    escalation = point["escalation"]
    student_q, teacher_q = shipped.get("latency_quantiles_ms") or [], speed.get("latency_quantiles_ms") or []
    latency = cascade_percentiles(student_q, teacher_q, escalation) if student_q and teacher_q else {}
    usd = None
    if student["usd_per_1k"] is not None and teacher["usd_per_1k"] is not None:
        usd = _significant(student["usd_per_1k"] + escalation * teacher["usd_per_1k"])
    return {
        "threshold": point["threshold"],
        "coverage": point["coverage"],
        "escalation": escalation,
        "agreement": point["agreement"],
        "interval": point["interval"],
        "counted_as": shipped["confidence"]["agreement"],
        "p50_ms": latency.get("p50"),
        "p95_ms": latency.get("p95"),
        "usd_per_1k": usd,
        "curve": _curve_sample(shipped["confidence"]["curve"], point["threshold"]),
    }


def _curve_sample(curve: list[dict[str, Any]], chosen: float, steps: int = 10) -> list[dict[str, Any]]:
    """The coverage curve at about every tenth of coverage, and the chosen point, for the report's table."""
    picked = {min(curve, key=lambda p: abs(p["coverage"] - k / steps))["threshold"] for k in range(1, steps + 1)}
    picked.add(chosen)
    return [dict(p, chosen=p["threshold"] == chosen) for p in curve if p["threshold"] in picked]


def _machine_usd(seconds: float, per_hour: float) -> float | None:
    return _significant(seconds * per_hour / 3600) if per_hour else None


def _significant(value: float, digits: int = 4) -> float:
    """Rounded to significant digits, not decimals: a tiny model's cost (a few millionths of a dollar)
    keeps its precision, and two builds' costs compare as measured."""
    return float(f"{value:.{digits}g}")


def _ratio(teacher: float | None, student: float | None) -> float | None:
    return round(teacher / student, 2) if teacher and student else None


def usd_text(value: float | None) -> str:
    """Dollars to read at a glance: from 10 cents up to the cent, below that to 2 significant digits."""
    if value is None:
        return "-"
    return f"${value:.2f}" if value >= 0.1 or value == 0 else f"${value:.2g}"
