"""The linear student of a label task (`student.candidates: [linear]`): its ONNX graph answers as scikit-learn
does, it is scored, exported, verified and gated beside the decoder, and when it ships its package answers
/v1/predict over real HTTP and says at the OpenAI paths that it generates no text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distillc import api
from distillc.build.artifacts import read_jsonl
from distillc.cli import verify_table
from distillc.errors import DistillcError
from distillc.student import linear
from distillc_runtime.linear import LinearClassifier, words
from tests.conftest import review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import http, start

ODD = [
    "Café au lait was great, naïve über-service!",  # non-ASCII letters: the graph's RE2 \w would split them
    "東京 was terrible",
    "!!! ??? ...",  # no words at all
    "",
    "WONDERFUL wonderful Wonderful",  # case and repeats: counts, not presence
    "broken " * 500,
    "the kettle was lovely\tand\nthe room\u00a0too",  # tabs, newlines, a no-break space
]


def test_words_are_lower_cased_unicode_words_of_two_characters_or_more() -> None:
    assert words("Café, NAÏVE   a über-Service 東京 x1") == "café naïve über service 東京 x1"
    assert words("!!! a ?") == ""


def test_the_onnx_graph_answers_as_scikit_learn_does(tmp_path: Path) -> None:
    texts = review_texts(120) + ["Café was great", "naïve staff, terrible", "東京 superb"]
    labels = [sentiment(t) for t in texts]
    pipeline, chosen = linear.fit(texts, labels, "accuracy", seed=0)
    assert chosen["folds"] == 5 and chosen["C"] in linear.STRENGTHS and chosen["cv_score"] > 0.9
    size = linear.write_model(pipeline, tmp_path / "model")
    assert size == (tmp_path / "model" / "model.onnx").stat().st_size
    config = json.loads((tmp_path / "model" / "classifier.json").read_text())
    assert config["labels"] == ["negative", "positive"] and config["parameters"] == linear.parameters(pipeline)

    probe = review_texts(40, seed=7) + ODD
    expected, probabilities = linear.predict(pipeline, probe)
    runtime = LinearClassifier(tmp_path / "model")
    got, graph_probabilities = runtime.probabilities(probe)
    assert got == expected
    assert np.abs(graph_probabilities - probabilities).max() < 1e-5
    assert runtime.predict_batch(probe) == expected and runtime.predict(probe[0]) == expected[0]
    # Unicode words reach the features: "café" is its own feature, not "caf".
    vocabulary = pipeline.named_steps["tfidf"].vocabulary_
    assert "café" in vocabulary and "caf" not in vocabulary


def test_a_label_seen_once_is_fit_without_cross_validation(tmp_path: Path) -> None:
    texts = ["good one", "bad one", "good two", "bad two", "odd one"]
    pipeline, chosen = linear.fit(texts, ["pos", "neg", "pos", "neg", "odd"], "macro_f1", seed=0)
    assert chosen == {"C": 1.0, "cv_score": None, "folds": 0}
    assert linear.predict(pipeline, ["good"])[0] == ["pos"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> api.BuildResult:
    folder = tmp_path_factory.mktemp("linear")
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            folder,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(100),
            changes={
                "student.candidates": ["linear"],
                "export.quantization": ["fp32", "int8"],
                "export.max_quality_drop": 1.0,
            },
        )
        return api.build(spec, out=folder / "out")


def test_the_linear_student_is_scored_exported_verified_and_ships_when_smallest(built: api.BuildResult) -> None:
    made = built.stage("linear").summary["student"]
    assert made["rows"] > 0 and made["parameters"] > made["features"] > 0 and made["parity_max_abs"] < 1e-4

    evaluated = {c["name"]: c for c in built.stage("evaluate").summary["candidates"]}
    assert evaluated["linear"]["kind"] == "linear" and evaluated["linear"]["parameters"] == made["parameters"]
    verify = built.stage("verify").summary
    by_name = {v["name"]: v for v in verify["variants"]}
    assert list(by_name) == ["fp32", "int8", "linear"]
    shipped = by_name["linear"]
    assert shipped["kind"] == "linear" and shipped["listed"] and shipped["provider"] == "CPUExecutionProvider"
    # The exported graph answers as scikit-learn did: the same score on the same held-out inputs.
    assert shipped["score"] == evaluated["linear"]["score"]
    assert shipped["parameters"] < by_name["fp32"]["parameters"] / 100
    assert shipped["bytes"] < by_name["int8"]["bytes"] / 10
    assert shipped["drop"] == round(by_name["fp32"]["score"] - shipped["score"], 6) + 0.0
    assert shipped["memory_mb"] and shipped["memory_mb"] < by_name["fp32"]["memory_mb"]
    answers = read_jsonl(built.stage("verify").artifact / "linear.predictions.jsonl")
    sklearn = read_jsonl(built.stage("linear").artifact / "predictions.jsonl")
    assert [a["output"] for a in answers] == [s["output"] for s in sklearn]

    # Every variant passes this lenient gate: the student with the fewest weights ships.
    assert built.stage("gate").summary["variant"] == "linear"
    package = json.loads((built.package_dir / "package.json").read_text())
    assert package["student"]["kind"] == "linear" and package["student"]["base_model"] is None
    assert package["deploy"]["max_input_tokens"] is None  # no tokens: the body's byte limit is the only one
    assert (built.package_dir / "model" / "classifier.json").exists()
    table = verify_table(verify, "linear").splitlines()
    assert table[3].split()[:2] == ["linear", "linear"] and table[3].endswith("<- ships")
    report = (built.build_dir / "report.html").read_text()
    assert "linear (TF-IDF, logistic regression)" in report and f"{made['parameters']:,}" in report
    readme = (built.package_dir / "README.md").read_text()
    assert "linear classifier over TF-IDF word features" in readme and "answer 404" in readme


def test_the_linear_package_answers_predict_and_refuses_chat_over_http(built: api.BuildResult) -> None:
    package = built.package_dir
    process, port = start(package)
    base = f"http://127.0.0.1:{port}"
    try:
        holdout = read_jsonl(built.stage("verify").artifact / "linear.predictions.jsonl")
        for row in holdout[:5]:
            served = (200, {"output": row["output"], "confidence": row["confidence"], "route": "student"})
            assert http("POST", f"{base}/v1/predict", {"input": row["input"]}) == served
        status, body = http("POST", f"{base}/v1/predict", {"input": "Café was wonderful 東京 " * 400})
        assert status == 200 and body["output"] in {"positive", "negative"}
        chat = {"model": "review-sentiment", "messages": [{"role": "user", "content": "the kettle was lovely"}]}
        status, body = http("POST", f"{base}/v1/chat/completions", chat)
        assert status == 404 and "/v1/predict" in body["detail"] and "not a language model" in body["detail"]
        assert http("GET", f"{base}/v1/models")[0] == 404
        assert http("POST", f"{base}/v1/predict", {"input": 42})[0] == 422
        health = http("GET", f"{base}/healthz")[1]
        assert health["selftest"]["passed"] is True
        smoke = subprocess.run(
            [sys.executable, str(package / "smoke_test.py"), base], capture_output=True, text=True, timeout=120
        )
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert "404 expected" in smoke.stdout
        metrics = http_text(f"{base}/metrics")
        assert 'distillc_requests_total{route="/v1/predict",status="200"}' in metrics
    finally:
        process.terminate()
        process.wait(timeout=30)


def http_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_a_graph_that_answers_otherwise_than_scikit_learn_stops_the_build(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiler reads reversed texts while the graph reads them as sent: the parity check catches it."""
    monkeypatch.setattr(linear, "words", lambda text: words(text)[::-1])
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(60),
            changes={"student.candidates": ["linear"]},
        )
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out", until="linear")
    assert caught.value.code == "E316"
    assert "answers otherwise than scikit-learn" in caught.value.message
