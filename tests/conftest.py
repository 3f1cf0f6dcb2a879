from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tiny import build_tiny_model

POSITIVE = ["great", "wonderful", "excellent", "lovely", "superb", "fantastic", "brilliant", "pleasant"]
NEGATIVE = ["awful", "terrible", "broken", "horrible", "useless", "poor", "dreadful", "disappointing"]
THINGS = [
    "battery",
    "screen",
    "service",
    "delivery",
    "price",
    "sound",
    "camera",
    "fabric",
    "manual",
    "handle",
    "kettle",
    "staff",
    "room",
    "food",
    "app",
    "keyboard",
]


def sentiment(text: str) -> str:
    """The test teacher's rule: deterministic, so the student can learn it."""
    return "positive" if any(w in text.split() for w in POSITIVE) else "negative"


def review_texts(n: int = 160, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < n:
        text = f"the {rng.choice(THINGS)} was {rng.choice(POSITIVE + NEGATIVE)}"
        if rng.random() < 0.5:
            text += f" and the {rng.choice(THINGS)} too"
        if text not in texts:
            texts.append(text)
    return texts


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = review_texts(400, seed=1) + ["positive", "negative", "Classify the sentiment of the review."] * 20
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus)


# A spec of another task, as text: tests of the spec's YAML (positions, diagnostics) and of the runner.
TICKETS = """\
name: tickets
task:
  instructions: Route the ticket.
  examples:
    - {input: "card declined", output: billing}
    - {input: "app crashes", output: bug}
    - {input: "love it", output: other}
  output: {type: label, labels: [billing, bug, other]}
"""
VALID = (
    TICKETS
    + """\
inputs:
  source: {path: inputs.txt}
teacher: {model: gpt-4o-mini}
student: {base_model: smollm2-135m-instruct}
"""
)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "inputs.txt").write_text("one\ntwo\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec


def spec_data(base_url: str, student: str, min_score: float, epochs: int) -> dict[str, Any]:
    """The review-sentiment spec the build tests share, as data."""
    return {
        "name": "review-sentiment",
        "task": {
            "instructions": "Classify the sentiment of the review.",
            "examples": [
                {"input": "the kettle was lovely", "output": "positive"},
                {"input": "the screen was broken", "output": "negative"},
                {"input": "the staff was superb and the room too", "output": "positive"},
            ],
            "output": {"type": "label", "labels": ["positive", "negative"]},
        },
        # review_texts are made from templates, so many are near duplicates of each other: tests of other
        # things keep them all (tests/test_dedup.py is where near duplicates are dropped).
        "inputs": {"source": {"path": "data/reviews.jsonl", "field": "text"}, "dedup": "exact"},
        "teacher": {
            "provider": "openai",
            "model": "test-teacher",
            "base_url": base_url,
            "api_key_env": "DISTILLC_TEST_KEY",
            "max_concurrency": 4,
        },
        "student": {
            "base_model": student,
            "epochs": epochs,
            "learning_rate": 3.0e-3,
            "batch_size": 8,
            "max_seq_len": 64,
        },
        "evaluation": {"holdout": 0.15, "min_score": min_score},
        "deploy": {"max_new_tokens": 8},
    }


def write_spec(
    folder: Path,
    *,
    base_url: str,
    student: str,
    inputs: list[str] | None = None,
    min_score: float = 0.5,
    epochs: int = 30,
    changes: dict[str, Any] | None = None,
) -> Path:
    """The shared spec in `folder`, with its inputs in data/reviews.jsonl; `changes` as edit_spec takes them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    rows = inputs if inputs is not None else review_texts()
    (folder / "data" / "reviews.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in rows), encoding="utf-8"
    )
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_data(base_url, student, min_score, epochs), sort_keys=False), encoding="utf-8")
    if changes:
        edit_spec(spec, changes)
    return spec


def local_teacher_spec(folder: Path, tiny_model: Path, inputs: list[str]) -> Path:
    """The shared spec with the tiny model as an in-process teacher (and as the student)."""
    changes = {"teacher": {"provider": "local", "model": str(tiny_model)}}
    return write_spec(folder, base_url="", student=str(tiny_model), inputs=inputs, changes=changes)


def edit_spec(spec: Path, changes: dict[str, Any]) -> None:
    """Change a spec file as data: each dotted key ("student.epochs", "budget") is set to its value, or
    removed when the value is None."""
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    spec.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def set_teacher(spec: Path, **settings: object) -> None:
    """Add or override `teacher:` settings."""
    edit_spec(spec, {f"teacher.{key}": value for key, value in settings.items()})


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A label task's package built from the tiny model. Tests that change its files work on a copy."""
    from distillc import api
    from tests.fake_teacher import FakeTeacher

    folder = tmp_path_factory.mktemp("package")
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            folder, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60), epochs=2, min_score=0.0
        )
        built = api.build(spec, out=folder / "out", emit=lambda e: None).package_dir
    assert built is not None
    return built
