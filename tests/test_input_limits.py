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


def long_header_student(tiny_model: Path, student: Path) -> Path:
    shutil.copytree(tiny_model, student)
    template = student / "chat_template.jinja"  # where transformers 5 keeps it; tokenizer_config.json before
    if template.exists():
        template.write_text(LONG_HEADER + template.read_text())
    else:
        config = json.loads((student / "tokenizer_config.json").read_text())
        config["chat_template"] = LONG_HEADER + config["chat_template"]
        (student / "tokenizer_config.json").write_text(json.dumps(config))
    return student


def test_a_chat_template_longer_than_max_seq_len_stops_the_build(tmp_path: Path, tiny_model: Path) -> None:
    student = long_header_student(tiny_model, tmp_path / "student")
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


def test_the_default_max_seq_len_is_derived_from_the_rows_and_the_package_takes_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Without student.max_seq_len, the same long-header student trains on whole rows: the length comes from
    the data, the report says so, and the package's input limit follows it, so it answers its inputs."""
    student = long_header_student(tiny_model, tmp_path / "student")
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path / "spec",
            base_url=teacher.base_url,
            student=str(student),
            inputs=review_texts(40),
            min_score=0,
            epochs=1,
            changes={"student.max_seq_len": None},
        )
        result = api.build(spec, out=tmp_path / "out", emit=lambda e: None)
    train = result.stage("train").summary
    length = train["max_seq_len"]
    assert length["from"] == "data" and length["percentile"] == 99.5
    assert length["tokens"] % 16 == 0 and length["tokens"] >= length["at_percentile"] > 64
    assert train["truncated"] == 0 and train["longest_row"] == length["longest"] <= length["tokens"]
    report = (tmp_path / "out" / "report.html").read_text()
    assert f"{length['tokens']} tokens, from the data: 99.5th percentile {length['at_percentile']}" in report
    package = json.loads((result.package_dir / "package.json").read_text())
    assert package["deploy"]["max_input_tokens"] == length["tokens"]
    evaluation = [
        json.loads(x) for x in (result.stage("evaluate").artifact / "predictions.jsonl").read_text().splitlines()
    ]
    assert evaluation and not any(p.get("refused") for p in evaluation)


def test_derived_length_keeps_outliers_out_and_cuts_them_with_the_answer_kept() -> None:
    from distillc.student.examples import IGNORE, Example, derived_length, fit_length, truncation

    needed = [40 + i % 11 for i in range(997)] + [500, 700, 900]  # three outliers in a thousand
    length = derived_length(needed, model_limit=2048)
    assert length["at_percentile"] == 50 and length["tokens"] == 64 and length["longest"] == 900
    assert derived_length(needed[:10] + [900] * 990, model_limit=512)["tokens"] == 512  # within the model's positions

    row = Example(list(range(100)), [IGNORE] * 90 + list(range(90, 100)), False, needed=100)
    cut = fit_length(row, 64)
    assert cut.truncated and cut.ids == list(range(36, 100)) and cut.labels[-10:] == list(range(90, 100))
    assert cut.labels[:54] == [IGNORE] * 54
    assert fit_length(row, 100) is row
    assert truncation(needed, 64)["rows"] == 3  # 0.3%: a warning, not E314
