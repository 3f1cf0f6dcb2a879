"""The evaluate stage's output: the PyTorch students' answers to the held-out inputs, which the export
stage checks its graphs against (one JSON object a line: id, input, expected, output, output_ids, agrees)."""

from __future__ import annotations

from pathlib import Path

PREDICTIONS = "predictions.jsonl"


def predictions_path(folder: Path) -> Path:
    """The trained student's answers."""
    return folder / PREDICTIONS


def candidate_predictions(folder: Path, name: str) -> Path:
    """A pruned candidate's answers."""
    return folder / "candidates" / f"{name}.predictions.jsonl"
