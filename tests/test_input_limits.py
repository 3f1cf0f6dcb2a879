"""No package that refuses its own inputs: training rows that do not fit stop the build with a code, and an
input the package would refuse counts against the gate when the build scores it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distillc import api
from distillc.errors import DistillcError
from tests.conftest import review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher

# A chat template with a long fixed header, as SmolLM3's (65 tokens) or Llama 3's date header: the prompt
# alone is over a max_seq_len of 64.
LONG_HEADER = (
    "{{ '<|system|>Knowledge cutoff: June 2025. Today Date: 4 December 2026. Reasoning: off. Tools: none. "
    "Answer in the language of the question, briefly, and do not explain the answer unless asked.</s>' }}"
)


def test_a_chat_template_longer_than_max_seq_len_stops_the_build(tmp_path: Path, tiny_model: Path) -> None:
    student = tmp_path / "student"
    shutil.copytree(tiny_model, student)
    template = student / "chat_template.jinja"  # where transformers 5 keeps it; tokenizer_config.json before
    if template.exists():
        template.write_text(LONG_HEADER + template.read_text())
    else:
        config = json.loads((student / "tokenizer_config.json").read_text())
        config["chat_template"] = LONG_HEADER + config["chat_template"]
        (student / "tokenizer_config.json").write_text(json.dumps(config))

    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path / "spec", base_url=teacher.base_url, student=str(student), inputs=review_texts(40))
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out", emit=lambda e: None)
    error = caught.value
    assert error.code == "E314" and "student.max_seq_len 64 cuts" in error.message
    longest = int(error.message.split("the longest is ")[1].split(" ")[0])
    assert longest > 64 and f"set student.max_seq_len to {longest} or more" in (error.help or "")
    assert not (tmp_path / "out" / "package").exists()


def test_inputs_over_the_packages_limit_count_as_wrong_in_evaluate_and_verify(tmp_path: Path, tiny_model: Path) -> None:
    short = review_texts(48)
    long = [f"{text} " + " and ".join(["the room was very quiet at night"] * 6) for text in review_texts(24, seed=1)]
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=short + long,
            min_score=0,
            epochs=2,
            changes={"student.max_seq_len": 256, "deploy.max_input_tokens": 64},
        )
        result = api.build(spec, out=tmp_path / "out", emit=lambda e: None)

    predictions = (result.stage("evaluate").artifact / "predictions.jsonl").read_text().splitlines()
    evaluation = [json.loads(line) for line in predictions]
    refused = {p["input"] for p in evaluation if p.get("refused")}
    assert refused and refused <= set(long)  # the long inputs, and only they, are over 64 tokens with the prompt
    assert all(not p["agrees"] and p["output"] == "" for p in evaluation if p.get("refused"))

    verify = result.stage("verify")
    fp32 = next(v for v in verify.summary["variants"] if v["name"] == "fp32")
    assert fp32["refused"] == len(refused)
    rows = [json.loads(x) for x in (verify.artifact / "fp32.predictions.jsonl").read_text().splitlines()]
    assert {r["input"] for r in rows if r.get("refused")} == refused
    assert fp32["score"] <= 1 - len(refused) / len(rows)  # each refused input is a wrong answer
    selftest = json.loads((result.package_dir / "selftest.json").read_text())
    assert not {case["input"] for case in selftest["cases"]} & refused  # nothing the server would refuse
