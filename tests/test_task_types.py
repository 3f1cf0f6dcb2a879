"""A task type is one record: a type defined here, in the test, is checked in specs, asked of the teacher,
trained, evaluated, decoded under its constraint and packaged, with no other module touched."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from distillc import api
from distillc.spec.diagnostics import SpecError
from distillc.spec.load import load_spec
from distillc.task import TYPES, registered, task_type
from distillc.task.base import Pairs, Problem, Starter, StudentTokens
from distillc.task.label import label_sequences
from distillc.task.stats import mean_with_interval
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher

if TYPE_CHECKING:
    from distillc.spec.ir import TaskIR

STARS = ("1", "2", "3", "4", "5")
CONTRACT = "Answer with how many stars the review gives, one digit from 1 to 5."


class Stars:
    """A review's star rating: a closed set of five answers, scored by whether the student is within one."""

    name = "stars"
    metrics = ("within_one", "exact_match")
    output_fields: frozenset[str] = frozenset()
    starter = Starter(
        instructions="Rate the review.",
        examples=(("great", "5"), ("awful", "1"), ("fine", "3")),
        inputs=("lovely room", "cold food", "ok stay"),
    )

    def check(self, output: Any, examples: list[Any]) -> list[Problem]:
        return [
            Problem("E111", f"example {i + 1}: a rating is a digit from 1 to 5", ("task", "examples", i, "output"))
            for i, example in enumerate(examples)
            if example.output not in STARS
        ]

    def contract(self, task: TaskIR) -> str:
        return CONTRACT

    def accept(self, task: TaskIR, answer: str) -> tuple[str | None, str]:
        digits = re.findall(r"\b[1-5]\b", answer)
        return (digits[0], "") if len(digits) == 1 else (None, f"no single rating in {answer[:50]!r}")

    def endpoint_format(self, task: TaskIR) -> dict[str, Any]:
        return {}

    def choices(self, task: TaskIR) -> tuple[str, ...]:
        return STARS

    def constraint(self, task: TaskIR, tokens: StudentTokens) -> dict[str, Any]:
        return {"labels": label_sequences(tokens.answer_ids, STARS)}

    def answer_check(self, task: TaskIR) -> dict[str, Any]:
        return {"one_of": list(STARS)}

    def agrees(self, task: TaskIR, expected: str, predicted: str) -> bool:
        return expected.strip() == predicted.strip()

    def scores(self, task: TaskIR, pairs: Pairs) -> dict[str, Any]:
        return {metric: self.gated(task, metric, pairs) for metric in self.metrics}

    def gated(self, task: TaskIR, metric: str, pairs: Pairs) -> dict[str, Any]:
        if metric == "within_one":
            return mean_with_interval([float(abs(int(e) - int(p)) <= 1) if p in STARS else 0.0 for e, p in pairs])
        return mean_with_interval([float(self.agrees(task, e, p)) for e, p in pairs])

    def degenerate(self, task: TaskIR, pairs: Pairs) -> list[str]:
        return ["every answer is the same rating"] if len({p for _, p in pairs}) == 1 and len(pairs) > 1 else []


def stars_spec(folder: Path, base_url: str, student: str, **changes: Any) -> Path:
    spec = write_spec(folder, base_url=base_url, student=student, inputs=review_texts(60), epochs=8, min_score=0)
    examples = [{"input": e["input"], "output": "5" if e["output"] == "positive" else "1"}
                for e in yaml.safe_load(spec.read_text())["task"]["examples"]]  # fmt: skip
    edit_spec(spec, {"task.examples": examples, "task.output": {"type": "stars"}, **changes})
    return spec


def test_a_type_outside_the_registry_is_refused_by_name(tmp_path: Path) -> None:
    spec = stars_spec(tmp_path, "http://127.0.0.1:9/v1", "tiny")
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert "'task.output.type': Input should be 'text', 'label' or 'json'" in caught.value.render()


def test_the_spec_asks_the_type_for_its_checks_and_metrics(tmp_path: Path) -> None:
    with registered(Stars()):
        good = load_spec(stars_spec(tmp_path / "good", "http://127.0.0.1:9/v1", "tiny"))
        assert good.evaluation.metric == "within_one"  # "auto": the type's first metric
        bad = stars_spec(tmp_path / "bad", "http://127.0.0.1:9/v1", "tiny", **{"evaluation.metric": "accuracy"})
        bad.write_text(bad.read_text().replace("output: '5'", "output: '6'", 1))
        with pytest.raises(SpecError) as caught:
            load_spec(bad)
    rendered = caught.value.render()
    assert "error[E116] metric 'accuracy' needs output type 'label', not 'stars'" in rendered
    assert "help: use 'within_one', 'exact_match', or 'auto'" in rendered
    assert re.search(r"spec.yaml:\d+:\d+: error\[E111\] example 1: a rating is a digit from 1 to 5", rendered)
    assert "stars" not in TYPES  # registered for the test only


def test_a_toy_type_builds_end_to_end(tmp_path: Path, tiny_model: Path) -> None:
    asked: list[str] = []

    def teacher_answer(text: str) -> str:
        asked.append(text)
        if text.startswith("That answer is not valid"):
            return "1"
        return "Five stars: 5" if sentiment(text) == "positive" else "one star"  # "one star" is re-asked

    with registered(Stars()), FakeTeacher(teacher_answer) as teacher:
        spec = stars_spec(tmp_path, teacher.base_url, str(tiny_model), **{"deploy.max_new_tokens": 4})
        result = api.build(spec, out=tmp_path / "out", emit=lambda e: None)
        system = teacher.bodies[0]["messages"][0]["content"]

    assert system.endswith(CONTRACT)  # the teacher was told the type's contract
    label = result.stage("label").summary
    assert label["reasked"] > 0 and label["fixed_by_reask"] == label["reasked"] and label["rejected"] == 0
    assert set(label["distribution"]) <= set(STARS)  # a closed set: its distribution is reported
    labeled = [json.loads(line) for line in (result.stage("label").artifact / "labeled.jsonl").read_text().splitlines()]
    assert {row["output"] for row in labeled} == {"1", "5"}

    evaluation = result.stage("evaluate").summary
    assert evaluation["metric"] == "within_one" and set(evaluation["metrics"]) == {"within_one", "exact_match"}
    assert evaluation["decoding"] == "label-constrained"  # the type's constraint, decoded by the label trie
    predictions = (result.stage("verify").artifact / "fp32.predictions.jsonl").read_text().splitlines()
    assert {json.loads(line)["output"] for line in predictions} <= set(STARS)

    package = result.package_dir
    generation = json.loads((package / "model" / "generation.json").read_text())
    assert [x["text"] for x in generation["labels"]] == list(STARS)
    assert json.loads((package / "package.json").read_text())["task"]["labels"] == list(STARS)
    assert 'ANSWER_CHECK = {"one_of": ["1", "2", "3", "4", "5"]}' in (package / "smoke_test.py").read_text()


def test_every_built_in_type_answers_the_whole_protocol() -> None:
    """What a type must provide, checked on the three that ship."""
    from distillc.spec.ir import ExampleIR, TaskIR

    task = {
        "label": TaskIR("Route.", (ExampleIR("x", "bug"),), "label", ("bug", "other"), ""),
        "json": TaskIR("Extract.", (), "json", (), json.dumps({"type": "object"})),
        "text": TaskIR("Rewrite.", (), "text", (), ""),
    }
    tokens = StudentTokens(lambda s: [ord(c) for c in s] + [0], eos_id=0, vocab_size=256)
    for name, kind in TYPES.items():
        one = task[name]
        assert kind.metrics and kind.contract(one) and task_type(one) is kind
        assert isinstance(kind.constraint(one, tokens), dict) and kind.answer_check(one)
        assert kind.accept(one, kind.starter.inputs[0] if name == "text" else "{}" if name == "json" else "bug")[0]
