"""The gate stage's output: which variant ships, and on what evidence (decision.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NotRequired, TypedDict

from distillc.artifacts.versioned import read_record, write_record

DECISION = "decision.json"
VERSION = 1


class Decision(TypedDict):
    variant: dict[str, Any]  # the shipped variant as verify measured it
    metric: str
    n: int
    measured_with: str
    # With deploy.cascade: the chosen point of the shipped variant's coverage curve (threshold, coverage,
    # agreement and its interval) and the share expected to go to the teacher.
    cascade: NotRequired[dict[str, Any]]


def write_decision(folder: Path, decision: Decision) -> None:
    write_record(folder / DECISION, decision, VERSION)


def read_decision(folder: Path) -> Decision:
    return Decision(**read_record(folder / DECISION, VERSION))  # type: ignore[typeddict-item]
