"""Inputs that used to end in a traceback get a located error with a code, exit non-zero, and lose no
journaled answer: out-of-range numbers, unusable URLs, a journal line of the wrong shape, a write that
fails (file too large, as a full disk does), a broken report for `compare`, TeX-like labels, a hostile
spec text quoted in the package README, a folder name `init` must turn into a spec name."""

from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path

import pytest

from tests.conftest import VALID, review_texts, sentiment, write_spec
from tests.helpers import distillc, read_json
from tests.helpers import http as request

TEACHER, STUDENT = "teacher: {model: gpt-4o-mini", "student: {base_model: smollm2-135m-instruct"
OUT_OF_RANGE = {  # case: (line changed, what is added to it, code, what the message names)
    "a seed past 2**32": (STUDENT, ", seed: 100000000000000000000000", "E103", "student.seed"),
    "an infinite price": (TEACHER, ", price_per_1m_tokens: {input: .inf}", "E10", "price_per_1m_tokens.input"),
    "a 1e308 price": (TEACHER, ", price_per_1m_tokens: {output: 1e308}", "E103", "price_per_1m_tokens.output"),
    "a file:// base_url": (TEACHER, ", base_url: 'file:///etc/passwd'", "E125", "base_url"),
    "an ftp:// base_url": (TEACHER, ", base_url: 'ftp://host/v1'", "E125", "base_url"),
    "an http:// base_url without a host": (TEACHER, ", base_url: 'http:///v1'", "E125", "has no host"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_out_of_range_values_get_a_located_error(tmp_path: Path, case: str) -> None:
    line, added, code, named = OUT_OF_RANGE[case]
    assert line in VALID
    (tmp_path / "inputs.txt").write_text("one\ntwo\n")
    (tmp_path / "spec.yaml").write_text(VALID.replace(line, line + added))
    for command in ("validate", "plan"):
        done = distillc(command, str(tmp_path / "spec.yaml"), timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "spec.yaml:" in done.stderr and f"error[{code}" in done.stderr and named in done.stderr, done.stderr


def test_init_names_any_folder_with_a_name_its_validate_accepts(tmp_path: Path) -> None:
    for folder in ("täsk", "Ticket Routing!", "日本語"):
        assert distillc("init", str(tmp_path / folder)).returncode == 0
        done = distillc("validate", str(tmp_path / folder / "spec.yaml"))
        assert done.returncode == 0, done.stderr
    assert "name: task\n" in (tmp_path / "täsk" / "spec.yaml").read_text()


def test_compare_with_a_truncated_report_gets_e204(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text('{"schema_version": 1, "spec": {"na')
    done = distillc("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert done.returncode == 1 and "error[E204]" in done.stderr and "Traceback" not in done.stderr


HOSTILE_INSTRUCTIONS = "Classify the sentiment of the review.\n```\n<script>alert(1)</script> [link](http://x) | a"
TEX_LABEL = r"$\undefinedcmd{$"


@pytest.fixture(scope="module")
def hostile_build(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One build of a spec whose instructions open a code fence and hold HTML, and whose label looks like TeX."""
    from tests.fake_teacher import FakeTeacher

    folder = tmp_path_factory.mktemp("hostile")

    def answer(text: str) -> str:
        return TEX_LABEL if sentiment(text) == "negative" else "positive"

    with FakeTeacher(answer) as teacher:
        # Long instructions: training rows must fit them (student.max_seq_len), or the build stops with E314.
        spec = write_spec(
            folder,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(40),
            epochs=1,
            changes={"student.max_seq_len": 256},
        )
        data = spec.read_text()
        data = data.replace("min_score: 0.5", "min_score: 0.0").replace("- negative", f"- '{TEX_LABEL}'")
        data = data.replace("output: negative", f"output: '{TEX_LABEL}'")
        data = data.replace(
            "instructions: Classify the sentiment of the review.", f"instructions: {json.dumps(HOSTILE_INSTRUCTIONS)}"
        )
        spec.write_text(data)
        built = distillc("build", str(spec), "--out", str(folder / "out"), env={"DISTILLC_TEST_KEY": "k"})
        assert built.returncode == 0, built.stderr
        # The journal exported, edited by hand and brought back as an older distillc's JSONL journal.
        legacy = folder / "out" / "journal" / "teacher.jsonl"
        exported = distillc("journal", "export", str(folder / "out"), "--to", str(legacy))
        assert exported.returncode == 0, exported.stderr
        (folder / "out" / "journal" / "teacher.sqlite").unlink()
        lines = legacy.read_text().splitlines()
        assert f"{len(lines)} answers written" in exported.stderr
        broken = json.loads(lines[0]) | {"text": None}  # edited by hand: a line of the wrong shape
        legacy.write_text("\n".join([json.dumps(broken), *lines[1:]]) + "\n")
        requests_before = teacher.requests
        rebuilt = distillc(
            "build", str(spec), "--out", str(folder / "out"), "--force", "label", env={"DISTILLC_TEST_KEY": "k"}
        )
        asked_again = teacher.requests - requests_before
    return {"folder": folder, "rebuilt": rebuilt, "asked_again": asked_again, "journal_lines": len(lines)}


def test_a_journal_line_of_the_wrong_shape_is_skipped_reported_and_asked_again(hostile_build: dict) -> None:
    rebuilt = hostile_build["rebuilt"]
    assert rebuilt.returncode == 0 and "Traceback" not in rebuilt.stderr, rebuilt.stderr
    assert "journal lines skipped" in rebuilt.stdout + rebuilt.stderr
    assert hostile_build["asked_again"] == 1  # only that answer: every other journaled answer is kept


def test_tex_like_labels_are_drawn_as_text(hostile_build: dict) -> None:
    html = (hostile_build["folder"] / "out" / "report.html").read_text()
    assert "undefinedcmd" in html


def test_the_package_readme_escapes_what_it_quotes(hostile_build: dict) -> None:
    readme = (hostile_build["folder"] / "out" / "package" / "README.md").read_text()
    task_line = next(line for line in readme.splitlines() if line.startswith("- Task:"))
    assert "\\`\\`\\`" in task_line and "\\<script\\>" in task_line and "\\|" in task_line
    assert readme.count("```") % 2 == 0  # every fence the template opens is closed, none opened by the spec
    assert "<script>" not in readme


def test_a_write_that_fails_gets_e205_and_leaves_no_temporary_files(tiny_model: Path, tmp_path: Path) -> None:
    """Files past a size limit fail as on a full disk (EFBIG where ENOSPC would be): labeling fits (the
    journal's write-ahead log grows to about 0.55 MB here), the training checkpoint does not. The build stops
    with E205, and a rerun without the limit finishes without asking the teacher again."""
    import subprocess
    import sys

    from tests.fake_teacher import FakeTeacher

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))

    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60), epochs=1
        )
        spec.write_text(spec.read_text().replace("min_score: 0.5", "min_score: 0.0"))
        command = [sys.executable, "-m", "distillc", "build", str(spec), "--out", str(tmp_path / "out")]
        env = {**os.environ, "DISTILLC_TEST_KEY": "k"}
        failed = subprocess.run(command, capture_output=True, text=True, env=env, preexec_fn=limited, timeout=600)
        assert failed.returncode == 1 and "error[E205]" in failed.stderr, failed.stderr[-3000:]
        assert "Traceback" not in failed.stderr
        assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
        first = teacher.requests
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "[label] done" in failed.stderr and teacher.requests == first  # every answer was kept


def test_a_long_field_name_gets_a_short_422_and_no_docs_routes(tiny_package: Path, tmp_path: Path) -> None:
    from tests.helpers import start

    process, port = start(shutil.copytree(tiny_package, tmp_path / "package"))
    try:
        name = "z" * 60_000
        status, body = request(
            "POST", f"http://127.0.0.1:{port}/v1/predict", raw=json.dumps({"input": "hi", name: 1}).encode()
        )
        assert status == 422 and len(json.dumps(body)) < 1_000 and "z" * 100 not in json.dumps(body)
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert request("GET", f"http://127.0.0.1:{port}{path}")[0] == 404
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_json_artifacts_refuse_non_finite_numbers(tmp_path: Path) -> None:
    from distillc.build.artifacts import write_json

    with pytest.raises(ValueError, match="report.json"):
        write_json(tmp_path / "report.json", {"usd": float("inf")})
    assert not list(tmp_path.iterdir())
    write_json(tmp_path / "ok.json", {"usd": 1.5})
    assert read_json(tmp_path / "ok.json")["usd"] == 1.5
