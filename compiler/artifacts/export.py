"""The export stage's output: each student's ONNX variants (variants/<name>/), listed in exported.json."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from distillc.artifacts.prune import FULL
from distillc.artifacts.versioned import read_record, write_record

EXPORTED = "exported.json"
VERSION = 2  # 2: each student's kind and parameters


class Variant(TypedDict):
    name: str
    weights: str  # fp32, or a quantization of export.quantization; "linear" for the linear student
    bytes: int


class ExportedStudent(TypedDict):
    student: str
    kind: str  # decoder | linear
    layers: int  # a decoder's layers; 0 for a linear student
    parameters: int  # its weights: the gate ships the student with the fewest that passes
    variants: list[Variant]


def variant_name(student: str, weights: str) -> str:
    """The full student's variants are named by their weights (fp32, int8); a pruned candidate's get its name
    in front (l15-int8)."""
    return weights if student == FULL else f"{student}-{weights}"


def variant_dir(folder: Path, variant: str) -> Path:
    return folder / "variants" / variant


def write_exported(folder: Path, students: list[ExportedStudent]) -> None:
    write_record(folder / EXPORTED, {"students": students}, VERSION)


def read_exported(folder: Path) -> list[ExportedStudent]:
    """Each exported student, the full one first, with its variants: fp32 first, then in the order of
    export.quantization."""
    return read_record(folder / EXPORTED, VERSION)["students"]
