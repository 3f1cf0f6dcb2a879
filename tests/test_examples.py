"""The JSON example built end to end: the report's numbers are what the package answers over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from distillc.spec.load import load_spec
from distillc.task import task_type
from tests.helpers import distillc, http, read_json, stage_artifact, start

SPEC = Path(__file__).parent.parent / "specs" / "changelog-triage.yaml"


@pytest.mark.slow
def test_the_json_example_builds_and_its_package_answers_as_its_report_says(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = distillc("build", str(SPEC), "--out", str(out), "--log-format", "json", timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(out / "report.json")
    assert report["status"] == "succeeded" and report["evaluation"]["passed"]
    shipped = next(v for v in report["verify"]["variants"] if v["name"] == report["package"]["variant"])
    assert report["headline"]["student"]["score"] == shipped["score"]
    page = (out / "report.html").read_text()
    assert all(f"<td>{field}</td>" in page for field in ("bugs", "cves", "security"))  # per-field agreement
    holdout = [json.loads(line) for line in (stage_artifact(out, "split") / "holdout.jsonl").open()]
    assert len(holdout) == report["verify"]["n"]

    spec = load_spec(SPEC)
    schema = json.loads(spec.task.json_schema)
    process, port = start(out / "package")
    try:
        answers = []
        for row in holdout:
            status, body = http("POST", f"http://127.0.0.1:{port}/v1/predict", {"input": row["input"]})
            assert status == 200, body
            answers.append(body["output"])
    finally:
        process.terminate()
        process.wait(timeout=30)
    valid = 0
    for answer in answers:
        try:
            jsonschema.validate(json.loads(answer), schema)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    assert valid == len(answers)  # decoding is constrained to the schema
    kind = task_type(spec.task)
    agreeing = sum(kind.agrees(spec.task, r["output"], a) for r, a in zip(holdout, answers, strict=True))
    live = agreeing / len(holdout)
    assert live == pytest.approx(shipped["score"], abs=1e-6)
    print(f"\nchangelog-triage: exact match {live:.3f} live, {shipped['score']:.3f} in the report; {report['built_s']}")


MIGRATION = Path(__file__).parent.parent / "specs" / "review-sentiment-migration.yaml"


@pytest.mark.slow
def test_the_migration_example_asks_only_what_the_fine_tuning_file_lacks_and_reports_gold(tmp_path: Path) -> None:
    """From an OpenAI chat fine-tuning file, offline: its answers are imported, the teacher labels only the
    reviews the file lacks, and the hand-checked labels score student, teacher and baselines."""
    from distillc.teacher.journal import JournalView, journal_path

    out = tmp_path / "out"
    result = distillc("build", str(MIGRATION), "--out", str(out), timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "system prompt unlike task.instructions" in result.stderr
    report = read_json(out / "report.json")
    inputs, label = report["inputs"], report["label"]
    assert inputs["read"] == 224 and inputs["duplicates"] == 100  # the file's reviews, again in reviews.jsonl
    imported = label["imported"]["labeled"]
    assert imported == inputs["imported"] > 0 and label["requests_sent"] == inputs["kept"] - imported
    with JournalView(journal_path(out)) as journal:
        entries = list(journal.entries())
    assert sum("imported" in e for e in entries) == imported
    assert sum("imported" not in e for e in entries) == label["requests_sent"]  # the teacher's, and no more
    gold = report["evaluation"]["gold"]
    assert gold["n"] == report["evaluation"]["n"]  # every review has a hand-checked label
    assert {"student", "teacher", "majority", "few_shot_base", "gap_to_teacher"} <= set(gold)
    assert "against" in result.stdout and "human labels" in result.stdout
    # A second build sends nothing and trains nothing.
    again = distillc("build", str(MIGRATION), "--out", str(out), timeout=600)
    assert again.returncode == 0 and "ran: nothing (all cached)" in again.stdout
    print(f"\nmigration: {result.stdout}")
