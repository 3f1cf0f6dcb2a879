"""A cascade compiled under the gate: the spec's deploy.cascade, checked where it is written, and the threshold
the gate picks for the variant that ships."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from distillc.errors import GateFailed
from distillc.quality.gates import choose_variant
from distillc.quality.latency import cascade_percentiles, quantiles
from distillc.spec import load_spec, validate_file
from distillc.spec.diagnostics import line_col
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import curve_of, free_port, runtime, set_deploy, set_info, wait_healthy

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def spec_with(tmp_path: Path, cascade: dict, **changes: object) -> Path:
    return write_spec(
        tmp_path, base_url="http://127.0.0.1:9/v1", student="tiny", changes={"deploy.cascade": cascade, **changes}
    )


def diagnostics(spec: Path) -> list[tuple[str, str, str]]:
    """(code, message, the source line it points at) for each error."""
    _, found, source = validate_file(spec)
    lines = source.splitlines()
    return [(d.code, d.message, lines[line_col(source, d.start)[0] - 1]) for d in found if d.severity == "error"]


def test_the_cascade_teacher_defaults_to_the_specs_teacher(tmp_path: Path) -> None:
    spec = load_spec(spec_with(tmp_path, {"min_agreement": 0.98}))
    cascade = spec.deploy.cascade
    assert cascade is not None
    assert (cascade.base_url, cascade.model, cascade.api_key_env) == (
        "http://127.0.0.1:9/v1",
        "test-teacher",
        "DISTILLC_TEST_KEY",
    )
    assert (cascade.min_agreement, cascade.min_coverage, cascade.timeout_s, cascade.max_retries) == (0.98, 0.1, 5.0, 1)
    own = {"min_agreement": 0.9, "teacher": {"base_url": "https://big.example/v1", "model": "big", "api_key_env": "K"}}
    cascade = load_spec(spec_with(tmp_path, own)).deploy.cascade
    assert cascade is not None and (cascade.base_url, cascade.model, cascade.api_key_env) == (
        "https://big.example/v1",
        "big",
        "K",
    )
    assert load_spec(write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="tiny")).deploy.cascade is None


def test_cascade_mistakes_are_named_where_they_are_written(tmp_path: Path) -> None:
    spec = spec_with(
        tmp_path,
        {
            "min_agreement": 1.5,
            "teacher": {"base_url": "ftp://teacher", "api_key_env": SECRET, "timeout_s": 60},
        },
    )
    found = diagnostics(spec)
    assert SECRET not in " ".join(message for _, message, _ in found)  # never echoed
    codes = sorted(code for code, _, _ in found)
    assert codes == ["E103"]  # a value out of range stops the section before its cross-field checks
    edit_spec(spec, {"deploy.cascade.min_agreement": 0.98})
    found = diagnostics(spec)
    assert sorted(code for code, _, _ in found) == ["E113", "E125", "E132"]
    line_of = {code: line for code, _, line in found}
    assert "timeout_s: 60" in line_of["E132"] and "ftp://teacher" in line_of["E125"]
    assert "api_key_env" in line_of["E113"]
    assert SECRET not in " ".join(message for _, message, _ in found)


def test_a_local_teacher_needs_the_cascades_own_endpoint(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, {"min_agreement": 0.98}, teacher={"provider": "local", "model": "tiny"})
    assert [code for code, _, _ in diagnostics(spec)] == ["E131"]
    edit_spec(spec, {"deploy.cascade.teacher": {"base_url": "http://teacher:8000/v1", "model": "big"}})
    assert diagnostics(spec) == []


def variant(name: str, points: list[tuple[float, int, int]], total: int, parameters: int = 100) -> dict:
    curve = curve_of(points, total)
    return {
        "name": name,
        "kind": "decoder",
        "listed": True,
        "score": 0.95,
        "interval": [0.9, 0.99],
        "drop": 0.0,
        "parameters": parameters,
        "p50_ms": 1.0,
        "p95_ms": 2.0,
        "confidence": {"score": "sum", "curve": curve, "agreement": {"metric": "accuracy", "at_least": 1.0}},
    }


def test_a_cascades_latency_adds_the_teachers_time_to_the_escalated_share() -> None:
    student, teacher = quantiles([10.0] * 7), quantiles([100.0, 100.0, 300.0])
    assert student == [10.0] * 101 and teacher[0] == 100.0 and teacher[-1] == 300.0
    # 10% escalated: p50 is the student's alone, p95 lands among the escalated (student + teacher).
    assert cascade_percentiles(student, teacher, 0.10) == {"p50": 10.0, "p95": 110.0}
    assert cascade_percentiles(student, teacher, 0.04) == {"p50": 10.0, "p95": 10.0}
    assert cascade_percentiles(student, teacher, 1.0) == {"p50": 110.0, "p95": 310.0}


def test_the_gate_ships_a_variant_whose_cascade_keeps_the_agreement(tmp_path: Path) -> None:
    spec = load_spec(spec_with(tmp_path, {"min_agreement": 0.97, "min_coverage": 0.3}, **{"evaluation.min_score": 0}))
    # The smaller variant would ship without a cascade; its curve never keeps 0.97 at its lower bound.
    small = variant("int8", [(0.9, 400, 390), (0.5, 1000, 940)], 1000, parameters=50)
    large = variant("fp32", [(0.9, 400, 398), (0.5, 1000, 940)], 1000)
    verified = {"variants": [large, small], "n": 1000, "measured_on_target": False, "metric": "accuracy"}
    assert choose_variant(spec, verified)["name"] == "fp32"
    with pytest.raises(GateFailed) as failed:
        choose_variant(spec, verified | {"variants": [small]})
    assert failed.value.code == "E509"
    assert "int8: no coverage at that bound; at 30% coverage the bound is 0.955" in str(failed.value)
    assert "agreeing: equal to the teacher's answer" in str(failed.value)


# -- the package runs the cascade -----------------------------------------------------------------------

KEY = "sk-cascade-test-0123456789abcdefghijklmnop"


def cascaded(tiny_package: Path, folder: Path, base_url: str, **settings: object) -> Path:
    """A copy of the tiny label package with a cascade to `base_url`, as the package stage writes it."""
    package = folder / "package"
    shutil.copytree(tiny_package, package)
    info = json.loads((package / "package.json").read_text())
    cascade = {
        "threshold": 1.01,  # above any confidence: every request goes to the teacher
        "expected_escalation": 0.25,
        "expected_agreement": 0.99,
        "agreement_interval": [0.97, 1.0],
        "base_url": base_url,
        "model": "big-teacher",
        "api_key_env": "CASCADE_TEST_KEY",
        "timeout_s": 1.0,
        "max_retries": 1,
        "messages": [{"role": "system", "content": "Classify the sentiment of the review."}],
        "response_format": None,
        "output_type": "label",
        "labels": info["task"]["labels"],
        "shadow_share": 0.0,
        "instructions": info["task"]["instructions"],
    } | settings
    set_info(package, cascade=cascade)
    return package


@contextmanager
def serving(package: Path, log: Path, capture_dir: Path | None = None, **deploy: object) -> Iterator[str]:
    set_deploy(package, **deploy)
    port = free_port()
    capture = ["--capture-dir", str(capture_dir)] if capture_dir else []
    with log.open("w") as stderr:
        process = subprocess.Popen(
            runtime(package, "serve", str(package), "--port", str(port), *capture),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "CASCADE_TEST_KEY": KEY},
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def predict(base: str, text: str) -> tuple[int, dict, str]:
    """(status, body, X-Distillc-Route header) of one /v1/predict."""
    request = urllib.request.Request(
        f"{base}/v1/predict", json.dumps({"input": text}).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read()), reply.headers.get("X-Distillc-Route", "")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get("X-Distillc-Route", "")


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_unsure_answers_go_to_the_teacher_with_its_key_which_is_never_written(
    tiny_package: Path, tmp_path: Path
) -> None:
    with FakeTeacher(lambda text: "negative") as teacher:
        package = cascaded(tiny_package, tmp_path, teacher.base_url)
        log = tmp_path / "server.log"
        with serving(package, log) as base:
            status, body, route = predict(base, "the kettle was lovely")
            assert (status, body["output"], body["route"], route) == (200, "negative", "teacher", "teacher")
            asked = teacher.bodies[-1]
            assert asked["model"] == "big-teacher" and asked["messages"][-1] == {
                "role": "user",
                "content": "the kettle was lovely",
            }
            assert asked["messages"][0]["content"] == "Classify the sentiment of the review."
            assert teacher.authorizations[-1] == f"Bearer {KEY}"
            chat = {"model": "review-sentiment", "messages": [{"role": "user", "content": "the kettle was lovely"}]}
            reply = urllib.request.urlopen(
                urllib.request.Request(
                    f"{base}/v1/chat/completions", json.dumps(chat).encode(), {"content-type": "application/json"}
                ),
                timeout=60,
            )
            assert reply.headers["X-Distillc-Route"] == "teacher"
            assert json.loads(reply.read())["choices"][0]["message"]["content"] == "negative"
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
            assert metric(base, 'distillc_answers_total{route="teacher"}') == 2
            assert "distillc_confidence_bucket" in metrics and "distillc_expected_escalation 0.25" in metrics
        # The key reached the teacher, and nothing else: not the log, not a file, not an answer.
        assert KEY not in log.read_text()
        assert all(KEY.encode() not in p.read_bytes() for p in package.rglob("*") if p.is_file())
        assert KEY not in json.dumps(body) and "CASCADE_TEST_KEY" in (package / "package.json").read_text()


def test_sure_answers_stay_with_the_student_and_bad_teacher_answers_fall_back(
    tiny_package: Path, tmp_path: Path
) -> None:
    with FakeTeacher(lambda text: "it depends") as teacher:  # not a label: outside the task's contract
        package = cascaded(tiny_package, tmp_path, teacher.base_url, threshold=0.0)
        with serving(package, tmp_path / "server.log") as base:
            assert predict(base, "the kettle was lovely")[1]["route"] == "student"
            assert teacher.requests == 0
        set_info(package, cascade=json.loads((package / "package.json").read_text())["cascade"] | {"threshold": 1.01})
        with serving(package, tmp_path / "server.log") as base:
            status, body, route = predict(base, "the kettle was lovely")
            assert (status, body["route"], route) == (200, "fallback", "fallback")
            assert body["output"] in {"positive", "negative"} and teacher.requests == 1
            assert metric(base, 'distillc_teacher_errors_total{reason="invalid_answer"}') == 1


@pytest.mark.parametrize("how", ["dead", "slow", "erroring"])
def test_a_teacher_that_cannot_answer_gives_the_students_answer_within_the_deadline(
    tiny_package: Path, tmp_path: Path, how: str
) -> None:
    fault = (lambda text, attempt: "500") if how == "erroring" else None
    with FakeTeacher(lambda text: "negative", delay_s=5.0 if how == "slow" else 0.0, fault=fault) as teacher:
        url = f"http://127.0.0.1:{free_port()}/v1" if how == "dead" else teacher.base_url
        package = cascaded(tiny_package, tmp_path, url, timeout_s=0.5, max_retries=2)
        with serving(package, tmp_path / "server.log", request_timeout_s=2.0) as base:
            started = time.monotonic()
            status, body, route = predict(base, "the kettle was lovely")
            took = time.monotonic() - started
    assert (status, body["route"], route) == (200, "fallback", "fallback") and body["output"] in {
        "positive",
        "negative",
    }
    assert took < 2.0  # within the request's deadline: never a 504 because of the teacher
    if how == "erroring":
        assert teacher.requests == 3  # one call and its two retries


def test_the_breaker_opens_after_failures_and_closes_when_the_teacher_is_back(
    tiny_package: Path, tmp_path: Path
) -> None:
    broken = {"now": True}
    with FakeTeacher(lambda text: "negative", fault=lambda text, attempt: "500" if broken["now"] else None) as teacher:
        package = cascaded(
            tiny_package, tmp_path, teacher.base_url, max_retries=0, breaker_failures=3, breaker_cooldown_s=1.0
        )
        with serving(package, tmp_path / "server.log") as base:
            routes = [predict(base, f"the kettle was lovely {i}")[1]["route"] for i in range(6)]
            assert routes == ["fallback"] * 6
            assert teacher.requests == 3  # the breaker opened after 3 failures: the rest were not sent
            assert metric(base, "distillc_teacher_breaker") == 1.0
            broken["now"] = False
            time.sleep(1.2)  # past the cooldown: one trial call, which succeeds and closes it
            assert predict(base, "the kettle was lovely again")[1]["route"] == "teacher"
            assert metric(base, "distillc_teacher_breaker") == 0.0
            assert predict(base, "and once more")[1]["route"] == "teacher"


def test_a_flood_of_unsure_requests_gets_429_not_a_backlog_of_teacher_calls(tiny_package: Path, tmp_path: Path) -> None:
    with FakeTeacher(lambda text: "negative", delay_s=1.5) as teacher:
        package = cascaded(tiny_package, tmp_path, teacher.base_url, timeout_s=5.0)
        with (
            serving(package, tmp_path / "server.log", max_queue=2, request_timeout_s=10.0) as base,
            ThreadPoolExecutor(12) as pool,
        ):
            # 50 ms apart: the student answers each long before the next arrives (its own queue of 2 never fills),
            # while the teacher's 1.5 s calls pile up: the refusals are the escalation limit's.
            futures = []
            for i in range(12):
                futures.append(pool.submit(predict, base, f"the kettle was lovely {i}"))
                time.sleep(0.05)
            results = [future.result() for future in futures]
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(429) >= 6 and set(statuses) <= {200, 429}
    assert teacher.requests <= 2 + 2  # at most max_queue calls at a time, and the flood was refused
    refused = next(body for status, body, _ in results if status == 429)
    assert "waiting for the teacher" in refused["detail"]


def test_a_cascade_built_from_a_spec_routes_the_held_out_inputs_as_the_build_predicted(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The live check: the package, asked the held-out inputs through the cascade, escalates exactly the share
    the gate expected, and agrees with the teacher on the rest as verify measured (same inputs, same variant)."""
    from distillc import api
    from distillc.build.artifacts import read_jsonl
    from distillc.report.html import render_html

    cascade = {"min_agreement": 0.6, "min_coverage": 0.1}
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(160),
            epochs=20,
            min_score=0.0,
            changes={"deploy.cascade": cascade, "export.quantization": ["fp32"]},
        )
        built = api.build(spec, out=tmp_path / "out", emit=lambda e: None)
        package = built.package_dir
        assert package is not None
        point = built.stage("gate").summary["cascade"]
        section = json.loads((package / "package.json").read_text())["cascade"]
        assert section["threshold"] == point["threshold"] and section["expected_escalation"] == point["escalation"]
        assert point["interval"][0] >= 0.6 and point["coverage"] >= 0.1
        rows = read_jsonl(built.stage("verify").artifact / "fp32.predictions.jsonl")
        # The report: the chosen point, and the cascade's latency (student, plus the teacher's when escalated).
        shown = built.report["headline"]["cascade"]
        assert shown["escalation"] == point["escalation"] and shown["threshold"] == point["threshold"]
        quantiles_ms = next(v for v in built.report["verify"]["variants"] if v["name"] == "fp32")[
            "latency_quantiles_ms"
        ]
        assert quantiles_ms[0] <= shown["p50_ms"] <= shown["p95_ms"]
        assert [p["threshold"] for p in shown["curve"] if p["chosen"]] == [point["threshold"]]
        html = render_html(built.report)
        assert "<h3>Cascade</h3>" in html and f"{point['threshold']:.4g}" in html
        assert section["agreement"]["described"] == "equal to the teacher's answer"
        assert "a student answer agrees when equal to the teacher&#39;s answer." in html
        # bench/cascade.py reads the same report: the chosen point, and the coverage at each agreement target.
        bench = Path(__file__).parent.parent / "bench" / "cascade.py"
        done = subprocess.run(
            [sys.executable, str(bench), str(built.build_dir), "--out", str(tmp_path / "cascade.json")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        [benched] = json.loads((tmp_path / "cascade.json").read_text())
        assert benched["chosen"]["threshold"] == point["threshold"] and [r["agreement"] for r in benched["at"]] == [
            0.95,
            0.98,
            0.99,
        ]
        assert "chosen by the gate" in done.stdout
        asked_before = teacher.requests
        with serving(package, tmp_path / "server.log") as base:
            served = [predict(base, row["input"]) for row in rows]
    routes = [body["route"] for _, body, _ in served]
    assert set(routes) <= {"student", "teacher"}  # the teacher is up: no fallback
    assert routes.count("teacher") == teacher.requests - asked_before
    assert routes.count("teacher") / len(rows) == pytest.approx(point["escalation"], abs=1e-6)
    kept = [(row, body) for row, (_, body, _) in zip(rows, served, strict=True) if body["route"] == "student"]
    agreement = sum(body["output"] == row["expected"] for row, body in kept) / len(kept)
    assert agreement == pytest.approx(point["agreement"], abs=1e-6)
    taught = [(row, body) for row, (_, body, _) in zip(rows, served, strict=True) if body["route"] == "teacher"]
    assert all(body["output"] == row["expected"] for row, body in taught)  # the teacher's own answer


def test_shadowing_never_delays_an_answer_and_its_pairs_feed_the_next_build(tiny_package: Path, tmp_path: Path) -> None:
    from distillc.data.imports import message_rows

    captures = tmp_path / "captures"
    with FakeTeacher(lambda text: "negative", delay_s=0.8) as teacher:
        package = cascaded(tiny_package, tmp_path, teacher.base_url, threshold=0.0, shadow_share=1.0)
        with serving(package, tmp_path / "server.log", capture_dir=captures) as base:
            texts = [f"the kettle was lovely {i}" for i in range(4)]
            answered = []
            for text in texts:
                started = time.monotonic()
                status, body, _ = predict(base, text)
                assert time.monotonic() - started < 0.6  # the teacher's 0.8 s is not waited for
                answered.append(body["output"])
            deadline = time.monotonic() + 10
            while metric(base, "distillc_shadows_total") < len(texts) and time.monotonic() < deadline:
                time.sleep(0.1)
            agree = metric(base, 'distillc_shadows_total{result="agree"}')
            assert agree + metric(base, 'distillc_shadows_total{result="disagree"}') == len(texts)
            assert agree == answered.count("negative")
            assert metric(base, "distillc_shadow_agreement") == pytest.approx(agree / len(texts))
            assert metric(base, "distillc_escalation_rate") == 0.0
        assert teacher.requests == len(texts)
    # The pairs, as the inputs stage reads a chat_log capture: each input with the teacher's answer.
    [capture] = list(captures.glob("served-*.jsonl"))
    rows = list(message_rows(capture, "chat_log", ""))
    assert sorted((row.text, row.answer) for row in rows) == sorted((text, "negative") for text in texts)
    assert all(row.system == "Classify the sentiment of the review." for row in rows)
    assert {json.loads(line)["route"] for line in capture.read_text().splitlines()} == {"shadow"}


def test_shadowing_needs_a_cascade(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="tiny", changes={"deploy.shadow_share": 0.1})
    assert [code for code, _, _ in diagnostics(spec)] == ["E133"]
