"""The prune stage's output: the smaller students it made (candidates.json, and each one's model)."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from distillc.artifacts.versioned import read_record, write_record

CANDIDATES = "candidates.json"
VERSION = 1
FULL = "full"  # the trained student's name among the candidates


class Candidate(TypedDict):
    name: str
    layers: int
    kept: list[int]
    steps: int
    final_loss: float | None
    dev_loss: float | None
    tokens_per_second: float


class MadeCandidate(Candidate):
    model: Path  # its model directory, in the prune artifact


def candidate_name(layers: int) -> str:
    return f"l{layers}"


def write_candidates(folder: Path, made: list[Candidate]) -> None:
    write_record(folder / CANDIDATES, {"candidates": made}, VERSION)


def read_candidates(folder: Path) -> list[MadeCandidate]:
    """The candidates the prune stage made, largest first, each with its model directory."""
    listed = read_record(folder / CANDIDATES, VERSION)["candidates"]
    return [MadeCandidate(**c, model=candidate_dir(folder, c["name"]) / "model") for c in listed]


def candidate_dir(folder: Path, name: str) -> Path:
    return folder / "candidates" / name
