"""A JSON task end to end: the student's answers, as evaluated, verified and served, all follow the schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
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
        result = api.build(spec, out=tmp_path / "out", emit=lambda e: None, keep_weights=True)
    evaluation = result.stage("evaluate").summary
    assert evaluation["decoding"] == "json-schema-constrained" and evaluation["cut_short"] == 0
    verify = result.stage("verify").artifact
    for name in ("fp32.predictions.jsonl",):
        for line in (verify / name).read_text().splitlines():
            jsonschema.validate(json.loads(json.loads(line)["output"]), SCHEMA)
    assert "llguidance==" in (result.package_dir / "requirements.txt").read_text()
    # Each answer's confidence, as verified: the score that ranks disagreements best, chosen among all three.
    verified = json.loads((verify / "verified.json").read_text())["variants"][0]
    assert set(verified["confidence"]["auroc"]) == {"sum", "mean", "min"}
    assert verified["confidence"]["score"] in {"sum", "mean", "min"}
    # By hand, with the PyTorch student: a step's log-probability is over the tokens the schema allows there.
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from distillc.student.onnx_export import export_onnx
    from distillc_runtime.generate import Generator

    trained, fp32 = result.stage("train").artifact / "model", tmp_path / "fp32"
    fp32.mkdir()
    export_onnx(trained, fp32 / "model.onnx")
    for name in ("generation.json", "tokenizer.json"):
        shutil.copy2(result.package_dir / "model" / name, fp32 / name)
    generator = Generator(fp32)
    assert generator.json is not None
    model = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32)
    prompt = generator.prompt_ids("the kettle was lovely and it works")
    answer = generator.answer_prompts([prompt])[0]
    state, expected = generator.json.start(), []
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + list(answer.token_ids)])).logits[0].double().numpy()
    for j, token in enumerate(answer.token_ids):
        allowed = np.isfinite(state.masked(logits[len(prompt) - 1 + j]))
        here = logits[len(prompt) - 1 + j]
        expected.append(here[token] - np.logaddexp.reduce(here[allowed]))
        state.advance(token)
    assert list(answer.logprobs[: len(expected)]) == pytest.approx(expected, abs=1e-4)
    assert all(lp <= 0 for lp in answer.logprobs)
