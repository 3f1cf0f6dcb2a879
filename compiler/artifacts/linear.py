"""The linear stage's output: the label task's linear student, when student.candidates asks for one
(linear.json; its ONNX model in model/; scikit-learn's answers to the held-out inputs in predictions.jsonl)."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from distillc.artifacts.versioned import read_record, write_record

LINEAR = "linear.json"
VERSION = 1
NAME = "linear"  # the linear student's name, and its one variant's


class LinearStudent(TypedDict):
    name: str
    parameters: int  # IDF weights, coefficients and biases
    features: int  # distinct words and word pairs of the training rows
    C: float  # logistic regression's inverse regularization, as cross-validation chose it
    cv_score: float | None  # that choice's mean score over the folds (None: too few rows a label to fold)
    folds: int
    rows: int  # teacher-labeled rows it was fit on
    fit_seconds: float
    parity_max_abs: float  # largest probability difference of the ONNX graph from scikit-learn, held-out inputs


def write_linear(folder: Path, made: LinearStudent | None) -> None:
    write_record(folder / LINEAR, {"student": made}, VERSION)


def read_linear(folder: Path) -> LinearStudent | None:
    return read_record(folder / LINEAR, VERSION)["student"]


def model_dir(folder: Path) -> Path:
    return folder / "model"


def predictions_path(folder: Path) -> Path:
    return folder / "predictions.jsonl"
