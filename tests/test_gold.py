"""Human labels (gold): the student, the teacher and the baselines scored against them on the same inputs, the
student's paired gap to the teacher, and the gate on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillc import api
from distillc.errors import GateFailed
from distillc.quality.gates import gap_to_teacher
from distillc.quality.reference import reference_pairs, versus_gold
from distillc.spec import load_spec
from distillc.spec.diagnostics import SpecError
from distillc.spec.ir import TaskIR
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher

TASK = TaskIR("Classify.", (), "label", ("positive", "negative"), "")


def test_scores_against_gold_are_those_counted_by_hand() -> None:
    # Six held-out rows, four with a human label. Teacher right on 3 of 4; student right on 2 of 4.
    rows = [
        {"output": "positive", "gold": "positive"},
        {"output": "negative", "gold": "negative"},
        {"output": "positive", "gold": "negative"},
        {"output": "negative", "gold": "negative"},
        {"output": "positive"},
        {"output": "negative"},
    ]
    student = ["positive", "positive", "positive", "negative", "negative", "negative"]
    said = {"student": student, "majority": ["negative"] * 6, "few_shot_base": ["positive"] * 6}
    gold = versus_gold(TASK, "accuracy", rows, said)
    assert gold is not None and gold["n"] == 4
    assert gold["teacher"]["value"] == 0.75 and gold["student"]["value"] == 0.5
    assert gold["majority"]["value"] == 0.75 and gold["few_shot_base"]["value"] == 0.25
    # Paired per-row differences: 0, -1, 0, 0 -> mean -0.25
    assert gold["gap_to_teacher"]["value"] == -0.25 and gold["gap_to_teacher"]["measure"] == "agreement"
    low, high = gold["gap_to_teacher"]["interval"]
    assert -1 <= low <= -0.25 <= high <= 0
    assert reference_pairs("gold", rows, student) == [
        ("positive", "positive"),
        ("negative", "positive"),
        ("negative", "positive"),
        ("negative", "negative"),
    ]
    assert len(reference_pairs("teacher", rows, student)) == 6
    assert versus_gold(TASK, "accuracy", [{"output": "positive"}], {"student": ["positive"]}) is None


def test_the_gap_gate_passes_within_the_allowance_and_fails_beyond(tmp_path: Path) -> None:
    changes = {"inputs.source.gold_field": "label", "evaluation.max_gap_to_teacher": 0.1}
    spec = load_spec(write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="unused", changes=changes))
    summary = {
        "gold": {
            "n": 200,
            "student": {"value": 0.80},
            "teacher": {"value": 0.84},
            "gap_to_teacher": {"value": -0.04, "interval": [-0.09, 0.01]},
        }
    }
    gap_to_teacher(spec, summary, tmp_path)  # -0.09 is within 0.1
    summary["gold"]["gap_to_teacher"]["interval"] = [-0.13, 0.02]
    with pytest.raises(GateFailed) as failed:
        gap_to_teacher(spec, summary, tmp_path)
    assert failed.value.code == "E507" and "0.130 below the teacher" in str(failed.value)
    with pytest.raises(GateFailed) as none:
        gap_to_teacher(spec, {"gold": None}, tmp_path)
    assert none.value.code == "E508"


def test_reference_gold_needs_gold_labels(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path, base_url="http://127.0.0.1:9/v1", student="unused", changes={"evaluation.reference": "gold"}
    )
    with pytest.raises(SpecError) as failed:
        load_spec(spec)
    text = failed.value.render()
    assert "error[E129]" in text and "evaluation.reference needs human labels" in text and "spec.yaml:" in text


def test_gold_travels_from_a_gold_file_and_a_gold_field_to_the_labeled_rows(tmp_path: Path) -> None:
    """Gold labels joined by input (case and spacing aside) and read from a field; a label outside the task's
    set is dropped and counted, never scored."""
    texts = review_texts(8)
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=texts)
        rows = [{"text": t} | ({"label": "Positive"} if n == 0 else {}) for n, t in enumerate(texts)]
        (tmp_path / "data" / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        gold = [{"review": f"  {texts[1].upper()} ", "human": "negative"}, {"review": texts[2], "human": "meh"}]
        (tmp_path / "data" / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gold))
        gold_file = {"path": "data/gold.jsonl", "field": "review", "gold_field": "human"}
        edit_spec(spec, {"inputs.source.gold_field": "label", "inputs.gold": gold_file})
        result = api.build(spec, out=tmp_path / "out", until="label")
    labeled = {
        r["input"]: r.get("gold")
        for r in map(json.loads, (result.stage("label").artifact / "labeled.jsonl").read_text().splitlines())
    }
    assert labeled[texts[0]] == "positive" and labeled[texts[1]] == "negative"
    assert labeled[texts[2]] is None and all(labeled[t] is None for t in texts[3:])
    assert result.stage("label").summary["gold"] == {"labeled": 2, "invalid": 1}
    assert result.stage("inputs").summary["gold"] == 3


def test_a_build_scored_against_gold_reports_every_answerer_on_the_same_inputs(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Half the inputs carry a human label that disagrees with the teacher on one in eight: the report's
    figures are those counted from the held-out rows and the student's predictions."""
    texts = review_texts()
    rows = []
    for n, text in enumerate(texts):
        row = {"text": text}
        if n % 2 == 0:
            flipped = {"positive": "negative", "negative": "positive"}[sentiment(text)]
            row["label"] = flipped if n % 16 == 0 else sentiment(text)
        rows.append(row)
    with FakeTeacher(sentiment) as teacher:
        changes = {
            "inputs.source.gold_field": "label",
            "evaluation.reference": "gold",
            "evaluation.max_gap_to_teacher": 0.5,
            "evaluation.min_score": 0.0,
        }
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), changes=changes)
        (tmp_path / "data" / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = api.build(spec, out=tmp_path / "out", until="evaluate")
    summary = result.stage("evaluate").summary
    holdout = [json.loads(x) for x in (result.stage("split").artifact / "holdout.jsonl").read_text().splitlines()]
    predictions = [
        json.loads(x) for x in (result.stage("evaluate").artifact / "predictions.jsonl").read_text().splitlines()
    ]
    gold_rows = [(r, p) for r, p in zip(holdout, predictions, strict=True) if "gold" in r]
    assert summary["reference"] == "gold" and summary["n"] == len(gold_rows) > 0
    gold = summary["gold"]
    assert gold["n"] == len(gold_rows)
    teacher_right = sum(r["gold"] == r["output"] for r, _ in gold_rows) / len(gold_rows)
    student_right = sum(r["gold"] == p["output"] for r, p in gold_rows) / len(gold_rows)
    assert gold["teacher"]["value"] == round(teacher_right, 6)
    assert gold["student"]["value"] == round(student_right, 6) == summary["score"]
    assert gold["gap_to_teacher"]["value"] == round(student_right - teacher_right, 6)
    assert {"majority", "few_shot_base"} <= set(gold)
    assert result.stage("evaluate").summary["metrics"]["accuracy"]["value"] >= 0  # against the teacher, as before
