"""Student-vs-teacher agreement: accuracy or macro-F1 for labels, exact match for text and JSON."""

from __future__ import annotations

import json

from distillc.spec.ir import TaskIR
from distillc.teacher.contract import normalize_label


def agrees(task: TaskIR, expected: str, predicted: str) -> bool:
    if task.output_type == "label":
        return normalize_label(expected) == normalize_label(predicted)
    if task.output_type == "json":
        try:
            return bool(json.loads(expected) == json.loads(predicted))
        except ValueError:
            return False
    return expected.strip() == predicted.strip()


def score(task: TaskIR, metric: str, pairs: list[tuple[str, str]]) -> float:
    """The spec's metric over (teacher answer, student answer) pairs."""
    if not pairs:
        return 0.0
    if metric == "macro_f1":
        return macro_f1(task, pairs)
    return sum(agrees(task, expected, predicted) for expected, predicted in pairs) / len(pairs)


def macro_f1(task: TaskIR, pairs: list[tuple[str, str]]) -> float:
    """Mean F1 over the labels the teacher used: a student that always answers the majority label scores low."""
    gold = [normalize_label(e) for e, _ in pairs]
    pred = [normalize_label(p) for _, p in pairs]
    f1s = []
    for label in sorted(set(gold)):
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s)
