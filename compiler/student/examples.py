"""Labeled rows as training examples: tokens, the loss mask, and the teacher's distribution where it branches."""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, overload

import orjson

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


def derived_length(needed: Sequence[int], model_limit: int | None) -> dict[str, Any]:
    """student.max_seq_len from the data: the training rows' lengths (prompt and answer, in tokens) up to
    LENGTH_PERCENTILE, rounded up to a multiple of LENGTH_STEP, within the model's positions."""
    import numpy as np  # here, not at the top: `plan` imports this module and must stay free of numerics

    ordered = np.sort(np.asarray(needed, dtype=np.int64)) if len(needed) else np.array([LENGTH_STEP])
    rank = max(1, math.ceil(len(ordered) * LENGTH_PERCENTILE / 100))  # nearest rank
    at_percentile = int(ordered[rank - 1])
    tokens = -(-at_percentile // LENGTH_STEP) * LENGTH_STEP
    if model_limit:
        tokens = min(tokens, model_limit)
    return {
        "tokens": tokens,
        "from": "data",
        "percentile": LENGTH_PERCENTILE,
        "at_percentile": at_percentile,
        "longest": int(ordered[-1]),
    }


def truncation(needed: Sequence[int], max_len: int) -> dict[str, int]:
    """How training rows of `needed` tokens each (uncut) fit `max_len` (student.max_seq_len; fit_length cuts
    a row longer than that): rows cut, the longest row, and the length that would fit all of them. E314 when
    more than TRUNCATION_SHARE of the rows are cut: a student trained on cut prompts answers other inputs
    than it was taught, and its package refuses those inputs."""
    import numpy as np

    lengths = np.asarray(needed, dtype=np.int64)
    cut = int((lengths > max_len).sum())
    longest = int(lengths.max()) if len(lengths) else 0
    if len(lengths) and cut / len(lengths) > TRUNCATION_SHARE:
        raise DistillcError(
            "E314",
            f"student.max_seq_len {max_len} cuts {cut} of {len(lengths)} training rows (prompt and answer; "
            f"the longest is {longest} tokens): the student would learn from cut prompts, and its package would "
            "refuse those inputs",
            help=f"set student.max_seq_len to {longest} or more; the prompt alone (the chat template and "
            "instructions) takes part of it",
        )
    return {"rows": cut, "of": len(lengths), "longest": longest, "over_by": max(0, longest - max_len)}


def with_soft_label(example: Example, sequences: dict[str, list[int]], row: dict[str, Any]) -> Example:
    """The example with the branch points of its label's path, where the teacher's distribution is known."""
    if not row.get("soft") or row["output"] not in sequences:
        return example
    start = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    found = [b for b in branches(sequences, row["output"], row["soft"], start) if b.position < len(example.ids)]
    return replace(example, branches=found)


class ExampleStore(Sequence[Example]):
    """Training examples kept in files rather than in memory: each row's tokens and loss targets as int32, and
    its soft label as JSON, each row read back by its own pread (a map of the files kept every page read in
    the process: 800 MB at a million rows). In memory per row: 20 bytes of offsets and length. Rows are
    stored whole; `fitted` gives them cut to a length, with their soft labels' branch points, as each is read."""

    def __init__(self, folder: Path) -> None:
        self._paths = (folder / "examples.bin", folder / "soft.jsonl")
        self._files: list[BinaryIO] | None = [path.open("wb") for path in self._paths]
        self._starts = array("q", [0])  # in int32 units: row i is [starts[i], starts[i + 1]), ids then labels
        self._soft_starts = array("q", [0])  # in bytes: row i's output and the teacher's distribution, or nothing
        self.needed = array("i")  # each row's tokens, uncut
        self._readers: list[int] = []  # file descriptors, once fitted
        self._max_len = 0
        self._sequences: dict[str, list[int]] = {}

    def add(self, example: Example, row: dict[str, Any]) -> None:
        assert self._files is not None, "the store is read-only once fitted"
        tokens, soft = self._files
        tokens.write(array("i", example.ids).tobytes() + array("i", example.labels).tobytes())
        self._starts.append(self._starts[-1] + 2 * len(example.ids))
        label = orjson.dumps([row["output"], row["soft"]]) if row.get("soft") else b""
        soft.write(label)
        self._soft_starts.append(self._soft_starts[-1] + len(label))
        self.needed.append(example.needed)

    def fitted(self, max_len: int, sequences: dict[str, list[int]]) -> ExampleStore:
        """Read-only from now on: rows cut to `max_len` (fit_length; 0 for whole), soft labels over `sequences`."""
        if self._files is not None:
            for file in self._files:
                file.close()
            self._readers = [os.open(path, os.O_RDONLY) for path in self._paths]
            self._files = None
        self._max_len, self._sequences = max_len, sequences
        return self

    def lengths(self) -> list[int]:
        """Each row's tokens as `fitted` gives it (fit_length keeps min(needed, max_len)), without reading it."""
        import numpy as np

        needed = np.frombuffer(self.needed, dtype=np.int32) if len(self.needed) else np.zeros(0, np.int32)
        return (np.minimum(needed, self._max_len) if self._max_len else needed).tolist()

    def __len__(self) -> int:
        return len(self.needed)

    @overload
    def __getitem__(self, index: int) -> Example: ...
    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...
    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        assert self._files is None, "call fitted() before reading"
        index %= len(self)
        tokens, soft = self._readers
        start, end = self._starts[index], self._starts[index + 1]
        values = array("i", os.pread(tokens, (end - start) * 4, start * 4))
        half = len(values) // 2
        example = Example(values[:half].tolist(), values[half:].tolist(), False, needed=self.needed[index])
        if self._max_len:
            example = fit_length(example, self._max_len)
        at, until = self._soft_starts[index], self._soft_starts[index + 1]
        label = os.pread(soft, until - at, at) if until > at else b""
        if label and self._sequences:
            output, distribution = orjson.loads(label)
            example = with_soft_label(example, self._sequences, {"output": output, "soft": distribution})
        return example

    def close(self) -> None:
        for file in self._files or []:
            file.close()
        for descriptor in self._readers:
            os.close(descriptor)
        self._readers = []
