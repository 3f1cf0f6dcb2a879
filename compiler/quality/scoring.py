"""Whether one student answer agrees with the teacher's (the metrics over many are in metrics.py)."""

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
