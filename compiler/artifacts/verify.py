"""The verify stage's output: every exported variant measured on this machine (verified.json), and each
one's answers to the held-out inputs (<variant>.predictions.jsonl: id, input, expected, output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from distillc.artifacts.versioned import read_record, write_record
from distillc.build.artifacts import read_jsonl, write_jsonl

VERIFIED = "verified.json"
VERSION = 1


class Verified(TypedDict):
    metric: str
    n: int
    variants: list[dict[str, Any]]  # name, student, layers, bytes, listed, score, interval, drop, latency, ...
    target: str
    measured_with: str  # the execution provider the figures come from
    measured_on_target: bool
    cpu: dict[str, Any]  # the machine the answers came from (distillc_runtime.cpu.describe)


def write_verified(folder: Path, verified: Verified) -> None:
    write_record(folder / VERIFIED, verified, VERSION)


def read_verified(folder: Path) -> Verified:
    return Verified(**read_record(folder / VERIFIED, VERSION))  # type: ignore[typeddict-item]


def predictions_path(folder: Path, variant: str) -> Path:
    return folder / f"{variant}.predictions.jsonl"


def write_predictions(folder: Path, variant: str, rows: list[dict[str, Any]]) -> None:
    write_jsonl(predictions_path(folder, variant), rows)


def read_predictions(folder: Path, variant: str) -> list[dict[str, Any]]:
    """One variant's answers to the held-out inputs as verify measured them: id, input, expected, output."""
    return read_jsonl(predictions_path(folder, variant))
