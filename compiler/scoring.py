"""Student-vs-teacher agreement: accuracy for labels, exact match for text and JSON."""

from __future__ import annotations

import json

from distillc.spec.ir import TaskIR
from distillc.teacher.contract import normalize_label

METRIC = {"label": "accuracy", "text": "exact_match", "json": "exact_match"}


def agrees(task: TaskIR, expected: str, predicted: str) -> bool:
    if task.output_type == "label":
        return normalize_label(expected) == normalize_label(predicted)
    if task.output_type == "json":
        try:
            return bool(json.loads(expected) == json.loads(predicted))
        except ValueError:
            return False
    return expected.strip() == predicted.strip()
