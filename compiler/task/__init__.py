"""Task types, one module each (label, json_value, text), each a record of everything that depends on what
an answer is (distillc.task.base.TaskType). Adding a type is one module registered here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distillc.task.base import TaskType
from distillc.task.json_value import JsonValue
from distillc.task.label import Label
from distillc.task.text import Text

TYPES: dict[str, TaskType] = {kind.name: kind for kind in (Text(), Label(), JsonValue())}


def task_type(task: Any) -> TaskType:
    """The type of `task` (a TaskIR, or a type's name)."""
    return TYPES[task if isinstance(task, str) else task.output_type]


def type_names() -> tuple[str, ...]:
    return tuple(TYPES)


def metric_names() -> tuple[str, ...]:
    """Every metric some type offers, in the order the types list them."""
    return tuple(dict.fromkeys(m for kind in TYPES.values() for m in kind.metrics))


@contextmanager
def registered(kind: TaskType) -> Iterator[TaskType]:
    """`kind` known for the duration (a type defined outside this package, as in a test)."""
    TYPES[kind.name] = kind
    try:
        yield kind
    finally:
        del TYPES[kind.name]


def accept(task: Any, answer: str) -> tuple[str | None, str]:
    """(training target, "") when a teacher answer is valid, (None, reason) when it is not: invalid answers
    are never trained on."""
    if not answer.strip():
        return None, "empty answer"
    return task_type(task).accept(task, answer)
