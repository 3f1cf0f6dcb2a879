"""What the teacher is asked: the task's instructions, its output contract and few-shot turns."""

from __future__ import annotations

from distillc.spec.ir import TaskIR

CONTRACT = {
    "label": "Answer with exactly one of these labels and nothing else: {labels}.",
    "json": "Answer with a single JSON value and nothing else.",
    "text": "Answer with the output only, no preamble.",
}


def system_prompt(task: TaskIR) -> str:
    contract = CONTRACT[task.output_type].format(labels=", ".join(task.labels))
    if task.json_schema:
        contract += f" It must conform to this JSON Schema: {task.json_schema}"
    return f"{task.instructions}\n\n{contract}"


def label_messages(task: TaskIR, text: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt(task)}]
    for example in task.examples:
        messages.append({"role": "user", "content": example.input})
        messages.append({"role": "assistant", "content": example.output})
    messages.append({"role": "user", "content": text})
    return messages


def reask_messages(task: TaskIR, messages: list[dict[str, str]], answer: str, reason: str) -> list[dict[str, str]]:
    """The conversation again, with the invalid answer and a correction: the teacher gets one more try."""
    correction = f"That answer is not valid: {reason}. " + CONTRACT[task.output_type].format(
        labels=", ".join(task.labels)
    )
    if task.json_schema:
        correction += f" It must conform to this JSON Schema: {task.json_schema}"
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": correction}]
