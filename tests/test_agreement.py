"""When a student's answer agrees with the teacher's: the one rule (distillc_runtime.answers.Agreement) that
verify ranks confidence by, the gate's cascade threshold counts, and the package's shadows count. Text
answers scored by chrf or rouge_l agree at evaluation.agree_at, with the package's own chrF and ROUGE-L equal
to the libraries the build gates with."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import CHRF

from distillc.quality.confidence import confidence_summary
from distillc.spec import load_spec, validate_file
from distillc.spec.diagnostics import line_col
from distillc_runtime.answers import Agreement, chrf, rouge_l
from distillc_runtime.cascade import CascadeConfig
from tests.conftest import edit_spec, write_spec

PAIRS = [
    ("count the items in a container", "count the items in a container"),
    ("a timer for timed callback registration methods", "a timed callback registration method"),
    ("open a file in text mode, read it, close it.", "read a file in text mode, write to it, and close the file."),
    ("set the selection anchor to the cell at (x, y)", "Set the selection anchor to the cell at (x,y)."),
    ("", ""),
    ("a", ""),
    ("", "abc"),
    ("ab", "abcdefgh"),
    ("Ünïcode — déjà vu", "unicode deja vu"),
    ("x  y\tz", "x y z"),
    ("42", "forty-two"),
]


def random_pairs(n: int) -> list[tuple[str, str]]:
    """Short phrases over a small vocabulary, so that they share words and characters in every proportion."""
    words = ["read", "write", "the", "a", "file", "stream", "close", "open", "set", "get", "item", "items"]
    words += ["of", "to", "it", "Éclair", "2", "x"]
    rng = random.Random(7)

    def phrase() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 9))) + rng.choice(["", ".", "!", ","])

    return [(phrase(), phrase()) for _ in range(n)]


@pytest.mark.parametrize("pairs", [PAIRS, random_pairs(400)], ids=["hand", "random"])
def test_the_packages_chrf_and_rouge_l_equal_sacrebleu_and_rouge_score(pairs: list[tuple[str, str]]) -> None:
    sacre, rouge = CHRF(), rouge_scorer.RougeScorer(["rougeL"])
    for reference, hypothesis in pairs:
        assert chrf(hypothesis, reference) == pytest.approx(sacre.sentence_score(hypothesis, [reference]).score / 100)
        assert rouge_l(hypothesis, reference) == pytest.approx(rouge.score(reference, hypothesis)["rougeL"].fmeasure)


def test_graded_text_agrees_at_the_bar_and_other_answers_agree_when_equal() -> None:
    teacher, close, changed = PAIRS[1][0], PAIRS[1][1], "read everything up to one of the chars"
    assert chrf(close, teacher) == pytest.approx(0.7985, abs=1e-4)
    assert Agreement("text", "chrf", 0.7)(teacher, close) and not Agreement("text", "chrf", 0.8)(teacher, close)
    assert not Agreement("text", "chrf", 0.7)(teacher, changed)
    assert not Agreement("text")(teacher, close)  # exact_match: the same text, spaces around aside
    assert Agreement("text")(" same answer", "same answer\n")
    assert Agreement("text", "rouge_l", 0.5)("open the file", "Open a file!")  # 2 of 3 words in order
    assert Agreement("label")("Positive", "positive.") and not Agreement("label")("positive", "negative")
    assert Agreement("json")('{"a": 1, "b": [2]}', '{"b":[2],"a":1}') and not Agreement("json")('{"a": 1}', "{a: 1}")


def test_the_confidence_curve_counts_agreement_by_the_rule() -> None:
    """The same answers and confidences: as exact text nothing the student says agrees, so there is nothing to
    rank; graded, the near answers agree and the confidence that ranks them is measured."""
    teacher = "a timer for timed callback registration methods"
    outputs = [
        (0.9, "a timer for timed callback registration methods."),
        (0.8, "a timed callback registration method"),
        (0.4, "read everything up to one of the chars"),
        (0.3, "a timer for the callback registration methods"),
        (0.2, "write a file"),
    ]
    rows = [{"expected": teacher, "output": out, "scores": {"sum": c, "mean": c, "min": 1 - c}} for c, out in outputs]
    exact = confidence_summary(rows, Agreement("text"))
    assert exact["auroc"] == {"mean": None, "min": None, "sum": None} and exact["coverage_at"]["0.95"] == 0.0
    graded = confidence_summary(rows, Agreement("text", "chrf", 0.7))
    assert graded["agreement"]["metric"] == "chrf" and graded["agreement"]["at_least"] == 0.7
    assert graded["score"] == "mean" and graded["auroc"]["mean"] == pytest.approx(5 / 6)
    assert [p["agree"] for p in graded["curve"]] == [1, 2, 2, 3, 3]
    assert graded["coverage_at"]["0.95"] == 0.4  # the two most confident agree, the third does not


def test_agree_at_defaults_by_the_metric_and_is_refused_where_answers_must_be_equal(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="tiny")
    assert load_spec(spec).evaluation.agree_at == 1.0  # a label task: equal labels
    edit_spec(spec, {"task.output": {"type": "text"}, "task.examples": [{"input": "a", "output": "b"}] * 3})
    assert load_spec(spec).evaluation.agree_at == 1.0  # text under exact_match ("auto")
    edit_spec(spec, {"evaluation.metric": "chrf"})
    assert load_spec(spec).evaluation.agree_at == 0.7
    edit_spec(spec, {"evaluation.agree_at": 0.55})
    assert load_spec(spec).evaluation.agree_at == 0.55
    edit_spec(spec, {"evaluation.metric": "exact_match"})
    _, found, source = validate_file(spec)
    [error] = [d for d in found if d.severity == "error"]
    line = source.splitlines()[line_col(source, error.start)[0] - 1]
    assert error.code == "E134" and "'exact_match'" in error.message and line.strip().startswith("agree_at:")


def test_the_packages_shadows_count_agreement_as_the_build_did() -> None:
    section = {
        "threshold": 0.5,
        "base_url": "http://127.0.0.1:9/v1",
        "model": "m",
        "api_key_env": "",
        "timeout_s": 1.0,
        "max_retries": 0,
        "messages": [],
        "response_format": None,
        "output_type": "text",
        "labels": [],
        "expected_escalation": 0.2,
        "expected_agreement": 0.9,
        "agreement": {"metric": "chrf", "at_least": 0.7, "described": "chrf >= 0.7 against the teacher's answer"},
    }
    graded = CascadeConfig.from_package({"cascade": section})
    assert graded is not None and graded.agrees(*PAIRS[1]) and not graded.agrees(*PAIRS[2])
    exact = CascadeConfig.from_package({"cascade": {k: v for k, v in section.items() if k != "agreement"}})
    assert exact is not None and not exact.agrees(*PAIRS[1]) and exact.agrees(*PAIRS[0])
