"""Student-vs-teacher metrics, each with a 95% bootstrap interval: what they are is the task type's
(distillc.task); this is where evaluation and verification ask for them."""

from __future__ import annotations

from typing import Any

from distillc.spec.ir import TaskIR
from distillc.task import task_type
from distillc.task.base import Pairs


def task_metrics(task: TaskIR, pairs: Pairs) -> dict[str, Any]:
    """Every metric that fits the task, each with its interval."""
    return task_type(task).scores(task, pairs)


def gated(task: TaskIR, metric: str, pairs: Pairs, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's metric, {"value", "interval"}. Without `metrics` (all of task_metrics), only what the gate
    needs is computed."""
    if metrics is not None and metric in metrics:
        return metrics[metric]
    return task_type(task).gated(task, metric, pairs)
