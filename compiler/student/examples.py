"""Labeled rows as training examples: tokens, the loss mask, and the teacher's distribution where it branches."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from distillc.student.distill import Branch, branches
from distillc.student.prompt import answer_ids

IGNORE = -100  # no loss at this position: the prompt, and padding


@dataclass(frozen=True)
class Example:
    """One training row: the tokens, the loss targets (IGNORE on the prompt), and for soft labels the branch
    points of the answer's path with the teacher's distribution there."""

    ids: list[int]
    labels: list[int]
    truncated: bool
    branches: list[Branch] = field(default_factory=list)


def encode(tokenizer: Any, prompt: list[int], target: str, max_len: int) -> Example:
    """The prompt is cut from the left when too long, the answer kept."""
    prompt_ids = list(prompt)
    target_ids = answer_ids(tokenizer, target)
    truncated = len(prompt_ids) + len(target_ids) > max_len
    if truncated:
        target_ids = target_ids[: max_len - 1]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_len - len(target_ids)) :]
    return Example(prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids, truncated)


def with_soft_label(example: Example, sequences: dict[str, list[int]], row: dict[str, Any]) -> Example:
    """The example with the branch points of its label's path, where the teacher's distribution is known."""
    if not row.get("soft") or row["output"] not in sequences:
        return example
    start = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    found = [b for b in branches(sequences, row["output"], row["soft"], start) if b.position < len(example.ids)]
    return replace(example, branches=found)
