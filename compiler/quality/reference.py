"""What held-out answers are scored against: the teacher's answers, or human labels (gold) where there are some.

Against gold, the teacher is scored too (the ceiling a student distilled from it can reach) and so are the
baselines, on the same inputs; the student's gap to the teacher is the mean of their paired per-input
differences, with its interval, which `evaluation.max_gap_to_teacher` gates on (an incumbent fine-tune's
replacement must answer about as well as the incumbent did).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillc.quality.metrics import gated
from distillc.spec.ir import TaskIR
from distillc.task import task_type
from distillc.task.stats import mean_with_interval


def reference_pairs(reference: str, rows: Sequence[dict[str, Any]], outputs: Sequence[str]) -> list[tuple[str, str]]:
    """(expected, answer) per held-out row scored: every row against the teacher's answer (`output`), or the
    rows with a human label against it (`gold`)."""
    if reference == "gold":
        return [(row["gold"], out) for row, out in zip(rows, outputs, strict=True) if "gold" in row]
    return [(row["output"], out) for row, out in zip(rows, outputs, strict=True)]


def versus_gold(
    task: TaskIR, metric: str, rows: Sequence[dict[str, Any]], answers: dict[str, Sequence[str]]
) -> dict[str, Any] | None:
    """Each answerer's score against the held-out rows' human labels, on the same rows, with intervals, and the
    student's paired gap to the teacher; None when no held-out row has one. `answers`: answerer -> its
    answer per row ("student", "majority", "few_shot_base"); the teacher's are the rows' outputs."""
    labeled = [n for n, row in enumerate(rows) if "gold" in row]
    if not labeled:
        return None
    gold = [rows[n]["gold"] for n in labeled]
    by = {"teacher": [rows[n]["output"] for n in labeled]} | {k: [v[n] for n in labeled] for k, v in answers.items()}
    scores = {name: gated(task, metric, list(zip(gold, said, strict=True))) for name, said in by.items()}
    student, teacher = row_scores(task, metric, gold, by["student"]), row_scores(task, metric, gold, by["teacher"])
    gap = mean_with_interval([s - t for s, t in zip(student, teacher, strict=True)])
    return {
        "n": len(labeled),
        "metric": metric,
        **scores,
        "gap_to_teacher": gap | {"measure": metric if metric in ("chrf", "rouge_l") else "agreement"},
    }


def row_scores(task: TaskIR, metric: str, expected: Sequence[str], said: Sequence[str]) -> list[float]:
    """One score per answer, whose mean is the metric where it is a mean (chrf, rouge_l), else agreement
    (accuracy, exact match): what a paired difference is taken on."""
    if metric in ("chrf", "rouge_l"):
        return [gated(task, metric, [(e, s)])["value"] for e, s in zip(expected, said, strict=True)]
    kind = task_type(task)
    return [float(kind.agrees(task, e, s)) for e, s in zip(expected, said, strict=True)]
