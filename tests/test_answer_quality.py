"""Answers worth training on: the label stage counts the answer distribution, and one answer covering most of
a text or JSON task warns, or stops `distillc build --strict` before anything is trained."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

from distillc import api
from distillc.build.events import Event
from distillc.quality.answers import TRACKED, AnswerTally
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher


def mostly_unknown(text: str) -> str:
    """A degenerate teacher: "unknown" to three inputs in four."""
    return text.split()[1] if zlib.crc32(text.encode()) % 4 == 0 else "unknown"


def test_tally_counts_shares_and_stays_bounded() -> None:
    tally = AnswerTally()
    for n in range(3 * TRACKED):  # all distinct: the counters are recycled, memory stays fixed
        tally.add(f"summary {n}")
        if n % 3 == 0:
            tally.add("unknown")
        if n % 10 == 0:
            tally.add("  ")
    summary = tally.summary()
    total = 3 * TRACKED + TRACKED + 3 * TRACKED // 10
    assert summary["answers"] == total and len(tally.counts) <= TRACKED
    assert summary["most_common"] == "unknown"
    # Misra-Gries: low by at most total / TRACKED
    assert TRACKED / total - 1 / TRACKED - 1e-4 <= summary["most_common_share"] <= TRACKED / total + 1e-4
    assert summary["empty_share"] == round(3 * TRACKED // 10 / total, 4)


def test_a_text_teacher_that_mostly_says_unknown_warns(tmp_path: Path) -> None:
    texts = review_texts(40)
    events: list[Event] = []
    with FakeTeacher(mostly_unknown) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=texts)
        edit_spec(spec, {"task.output": {"type": "text"}})
        result = api.build(spec, out=tmp_path / "out", until="split", emit=events.append)
    answers = result.stage("label").summary["answers"]
    unknown = sum(mostly_unknown(t) == "unknown" for t in texts)
    assert answers["most_common"] == "unknown" and answers["most_common_share"] == round(unknown / 40, 4)
    assert answers["empty_share"] == 0 and answers["repeated_share"] >= unknown / 40
    [warning] = [e for e in events if e.kind == "warning" and "one answer covers" in e.message]
    assert f"{unknown / 40:.0%}" in warning.message and "'unknown'" in warning.message
    # A cached label stage is judged again: the warning is not lost on the next build.
    again: list[Event] = []
    api.build(spec, out=tmp_path / "out", until="split", emit=again.append)
    assert any("one answer covers" in e.message for e in again)


def test_strict_stops_before_training_with_a_clear_error(tmp_path: Path) -> None:
    texts = review_texts(40)
    with FakeTeacher(mostly_unknown) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=texts)
        edit_spec(spec, {"task.output": {"type": "text"}})
        command = [sys.executable, "-m", "distillc", "build", str(spec), "--out", str(tmp_path / "out"), "--strict"]
        env = {**os.environ, "DISTILLC_TEST_KEY": "k"}
        failed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        asked = teacher.requests
        # The answers are journaled: a looser share builds on without asking again.
        edit_spec(spec, {"evaluation.max_answer_share": 0.9})
        passed = subprocess.run([*command, "--until", "split"], capture_output=True, text=True, env=env, timeout=300)
        assert teacher.requests == asked
    assert failed.returncode == 1 and "error[E304]" in failed.stderr and "Traceback" not in failed.stderr
    assert "'unknown'" in failed.stderr
    assert not (tmp_path / "out" / "cache" / "train").exists()
    assert passed.returncode == 0, passed.stderr[-2000:]


def test_a_label_task_reports_its_distribution_without_judging_it(tmp_path: Path) -> None:
    """Two labels: one covers at least half by design, so nothing warns."""
    events: list[Event] = []
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=review_texts(30))
        result = api.build(spec, out=tmp_path / "out", until="label", emit=events.append)
    answers = result.stage("label").summary["answers"]
    assert answers["most_common"] in ("positive", "negative") and answers["most_common_share"] >= 0.5
    assert answers["repeated_share"] == 1.0
    assert not any("one answer covers" in e.message for e in events)
