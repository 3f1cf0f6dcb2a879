"""A JSON task end to end: the student's answers, as evaluated, verified and served, all follow the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from distillc import api
from tests.conftest import review_texts, sentiment, write_spec
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
            tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60), epochs=8
        )
        text = spec.read_text()
        for old, new in (
            ("output: positive}", "output: {sentiment: positive}}"),
            ("output: negative}", "output: {sentiment: negative}}"),
        ):
            text = text.replace(old, new)
        text = text.replace(
            "output: {type: label, labels: [positive, negative]}",
            f"output: {{type: json, schema: {json.dumps(SCHEMA)}}}",
        )
        text = text.replace("deploy: {max_new_tokens: 8}", "deploy: {max_new_tokens: 32}")  # room for the JSON
        spec.write_text(text.replace("min_score: 0.5", "min_score: 0.0"))
        result = api.build(spec, out=tmp_path / "out", emit=lambda e: None)
    evaluation = result.stage("evaluate").summary
    assert evaluation["decoding"] == "json-schema-constrained" and evaluation["cut_short"] == 0
    verify = result.stage("verify").artifact
    for name in ("fp32.predictions.jsonl",):
        for line in (verify / name).read_text().splitlines():
            jsonschema.validate(json.loads(json.loads(line)["output"]), SCHEMA)
    assert "llguidance==" in (result.package_dir / "requirements.txt").read_text()
