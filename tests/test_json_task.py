"""A JSON task end to end: the student's answers, as evaluated, verified and served, all follow the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from distillc import api
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher

SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}


def test_a_json_task_answers_valid_json_everywhere(tmp_path: Path, tiny_model: Path) -> None:
    def teacher_answer(text: str) -> str:
        return json.dumps({"sentiment": sentiment(text)})

    with FakeTeacher(teacher_answer) as teacher:
        spec = write_spec(
            tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60), epochs=8, min_score=0
        )
        examples = [
            {"input": e["input"], "output": {"sentiment": e["output"]}}
            for e in yaml.safe_load(spec.read_text())["task"]["examples"]
        ]
        changes = {"task.examples": examples, "task.output": {"type": "json", "schema": SCHEMA}}
        edit_spec(spec, {**changes, "deploy.max_new_tokens": 32, "student.max_seq_len": 96})  # room for the JSON
        result = api.build(spec, out=tmp_path / "out", emit=lambda e: None)
    evaluation = result.stage("evaluate").summary
    assert evaluation["decoding"] == "json-schema-constrained" and evaluation["cut_short"] == 0
    verify = result.stage("verify").artifact
    for name in ("fp32.predictions.jsonl",):
        for line in (verify / name).read_text().splitlines():
            jsonschema.validate(json.loads(json.loads(line)["output"]), SCHEMA)
    assert "llguidance==" in (result.package_dir / "requirements.txt").read_text()
