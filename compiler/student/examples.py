"""Labeled rows as training examples: tokens, the loss mask, and the teacher's distribution where it branches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from distillc.errors import DistillcError
from distillc.student.distill import Branch, branches
from distillc.student.prompt import answer_ids

IGNORE = -100  # no loss at this position: the prompt, and padding
TRUNCATION_SHARE = 0.02  # training rows that may be cut (with a warning) before the build stops
# student.max_seq_len "auto": the rows' lengths up to this percentile, rounded up to a multiple of LENGTH_STEP.
# A few outliers past it are cut (a warning; well under TRUNCATION_SHARE); the rest fit whole.
LENGTH_PERCENTILE = 99.5
LENGTH_STEP = 16


@dataclass(frozen=True)
class Example:
    """One training row: the tokens, the loss targets (IGNORE on the prompt), and for soft labels the branch
    points of the answer's path with the teacher's distribution there."""

    ids: list[int]
    labels: list[int]
    truncated: bool
    branches: list[Branch] = field(default_factory=list)
    needed: int = 0  # prompt and answer tokens before any cut


def encode(tokenizer: Any, prompt: list[int], target: str, max_len: int | None = None) -> Example:
    """The prompt's and the answer's tokens, cut to `max_len` (see fit_length) when given."""
    target_ids = answer_ids(tokenizer, target)
    whole = Example(
        [*prompt, *target_ids], [IGNORE] * len(prompt) + target_ids, False, needed=len(prompt) + len(target_ids)
    )
    return whole if max_len is None else fit_length(whole, max_len)


def fit_length(example: Example, max_len: int) -> Example:
    """`example` cut to `max_len` tokens: the prompt from the left, the answer kept (its first max_len - 1
    tokens when the answer alone is too long)."""
    if len(example.ids) <= max_len:
        return example
    start = next((i for i, label in enumerate(example.labels) if label != IGNORE), len(example.ids))
    prompt, answer = example.ids[:start], example.ids[start:][: max_len - 1]
    prompt = prompt[len(prompt) - (max_len - len(answer)) :]
    return replace(example, ids=prompt + answer, labels=[IGNORE] * len(prompt) + answer, truncated=True)


def derived_length(needed: list[int], model_limit: int | None) -> dict[str, Any]:
    """student.max_seq_len from the data: the training rows' lengths (prompt and answer, in tokens) up to
    LENGTH_PERCENTILE, rounded up to a multiple of LENGTH_STEP, within the model's positions."""
    ordered = sorted(needed) or [LENGTH_STEP]
    rank = max(1, math.ceil(len(ordered) * LENGTH_PERCENTILE / 100))  # nearest rank
    at_percentile = ordered[rank - 1]
    tokens = -(-at_percentile // LENGTH_STEP) * LENGTH_STEP
    if model_limit:
        tokens = min(tokens, model_limit)
    return {
        "tokens": tokens,
        "from": "data",
        "percentile": LENGTH_PERCENTILE,
        "at_percentile": at_percentile,
        "longest": ordered[-1],
    }


def truncation(examples: list[Example], max_len: int) -> dict[str, int]:
    """How the training rows fit `max_len` (student.max_seq_len): rows cut, the longest row, and the length
    that would fit all of them. E314 when more than TRUNCATION_SHARE of the rows are cut: a student trained
    on cut prompts answers other inputs than it was taught, and its package refuses those inputs."""
    cut = [e for e in examples if e.truncated]
    longest = max((e.needed for e in examples), default=0)
    if examples and len(cut) / len(examples) > TRUNCATION_SHARE:
        raise DistillcError(
            "E314",
            f"student.max_seq_len {max_len} cuts {len(cut)} of {len(examples)} training rows (prompt and answer; "
            f"the longest is {longest} tokens): the student would learn from cut prompts, and its package would "
            "refuse those inputs",
            help=f"set student.max_seq_len to {longest} or more; the prompt alone (the chat template and "
            "instructions) takes part of it",
        )
    return {"rows": len(cut), "of": len(examples), "longest": longest, "over_by": max(0, longest - max_len)}


def with_soft_label(example: Example, sequences: dict[str, list[int]], row: dict[str, Any]) -> Example:
    """The example with the branch points of its label's path, where the teacher's distribution is known."""
    if not row.get("soft") or row["output"] not in sequences:
        return example
    start = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    found = [b for b in branches(sequences, row["output"], row["soft"], start) if b.position < len(example.ids)]
    return replace(example, branches=found)
