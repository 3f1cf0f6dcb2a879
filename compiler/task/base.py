"""What every task type provides, as a Protocol: the spec's checks, the teacher's contract, the endpoint's
output format, the student's decoding constraint, the metrics, the degenerate-answer checks and the
scaffold's starter. Stages, teacher, quality and the package ask the type, never test its name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from distillc.spec.ir import TaskIR

Pairs = list[tuple[str, str]]  # (teacher answer, student answer)


@dataclass(frozen=True)
class Problem:
    """Something wrong in a spec's task section: the spec loader places it at `path` (its key or value)."""

    code: str
    message: str
    path: tuple[str | int, ...]
    at: str = "value"  # "key" or "value"
    help: str | None = None


@dataclass(frozen=True)
class StudentTokens:
    """What a decoding constraint needs of the student's tokenizer."""

    answer_ids: Callable[[str], list[int]]  # an answer's tokens as the student is trained on them, with EOS
    eos_id: int
    vocab_size: int


@dataclass(frozen=True)
class Starter:
    """What `distillc init --task TYPE` writes: a small working task of this type."""

    instructions: str
    examples: tuple[tuple[str, str | dict[str, object]], ...]
    inputs: tuple[str, ...]
    output: Mapping[str, str] = field(default_factory=dict)  # task.output's keys besides type, as YAML text
    max_new_tokens: int = 8


class TaskType(Protocol):
    name: str
    metrics: tuple[str, ...]  # what `evaluation.metric` may name; the first is the default ("auto")
    output_fields: frozenset[str]  # task.output keys besides `type` that this type takes
    starter: Starter

    def check(self, output: Any, examples: list[Any]) -> list[Problem]:
        """Problems in `task.output` (the raw section) and in the examples' outputs."""

    def contract(self, task: TaskIR) -> str:
        """What the teacher is told an answer must be."""

    def accept(self, task: TaskIR, answer: str) -> tuple[str | None, str]:
        """(training target, "") for a valid teacher answer, (None, reason) for one to re-ask or drop."""

    def endpoint_format(self, task: TaskIR) -> dict[str, Any]:
        """The OpenAI-style `response_format` that holds an endpoint to the contract; {} for none."""

    def choices(self, task: TaskIR) -> tuple[str, ...]:
        """The closed set of answers (the teacher's scores over it are soft labels); () when open."""

    def constraint(self, task: TaskIR, tokens: StudentTokens) -> dict[str, Any]:
        """How the package decodes an answer: the keys of generation.json that distillc_runtime.constrain
        reads ({"labels": ...}, {"json_schema": ...}, or {} for free text)."""

    def answer_check(self, task: TaskIR) -> dict[str, Any]:
        """How the package's smoke test tells a well-formed answer: {"one_of": [...]}, {"json": true} or
        {"nonempty": true}."""

    def agrees(self, task: TaskIR, expected: str, predicted: str) -> bool:
        """Whether one student answer agrees with the teacher's."""

    def scores(self, task: TaskIR, pairs: Pairs) -> dict[str, Any]:
        """Every metric of this type over (teacher, student) pairs, each {"value", "interval"}, and details."""

    def gated(self, task: TaskIR, metric: str, pairs: Pairs) -> dict[str, Any]:
        """Just `metric`, computed no more than needed: what a gate compares."""

    def degenerate(self, task: TaskIR, pairs: Pairs) -> list[str]:
        """Warnings particular to this type about the student's answers (the general ones are in quality)."""
