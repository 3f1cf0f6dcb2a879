"""What the teacher is asked: the task's instructions, its type's output contract and few-shot turns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distillc.task import task_type

if TYPE_CHECKING:
    from distillc.spec.ir import TaskIR


def system_prompt(task: TaskIR) -> str:
    return f"{task.instructions}\n\n{task_type(task).contract(task)}"


def label_messages(task: TaskIR, text: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt(task)}]
    for example in task.examples:
        messages.append({"role": "user", "content": example.input})
        messages.append({"role": "assistant", "content": example.output})
    messages.append({"role": "user", "content": text})
    return messages


def reask_messages(task: TaskIR, messages: list[dict[str, str]], answer: str, reason: str) -> list[dict[str, str]]:
    """The conversation again, with the invalid answer and a correction: the teacher gets one more try."""
    correction = f"That answer is not valid: {reason}. " + task_type(task).contract(task)
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": correction}]
