"""The journal of teacher answers: committed answers survive kill -9, readers never block the writer, and an
older JSONL journal is imported without asking the teacher again."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from distillc import api
from distillc.teacher.journal import Journal, JournalView, journal_entry, journal_path
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc, journaled
from tests.journal_writer import kill_under_load


def test_every_acknowledged_answer_survives_kill_9_mid_commit(tmp_path: Path) -> None:
    """A writer committing under load is killed at random moments, five times: every answer whose commit
    had returned is found afterwards, and the journal opens and goes on each time."""
    path = tmp_path / "journal" / "teacher.sqlite"
    rng = random.Random(7)
    acknowledged = -1
    for _ in range(5):
        acknowledged = kill_under_load(path, acknowledged, rng, most=2_000)
        with JournalView(path) as journal:
            found = journal.answered(f"k{i}" for i in range(acknowledged + 1))
            assert len(found) == acknowledged + 1, f"{acknowledged + 1 - len(found)} acknowledged answers lost"
            assert journal.get(f"k{acknowledged}")["logprobs"][0]["token"] == "positive"
        # The next writer starts after what is there: a commit cut short by the kill left nothing half-written.
        with Journal(path) as journal:
            acknowledged = len(journal) - 1
            assert journal.answered([f"k{acknowledged}"])


def test_a_long_read_never_blocks_the_writer(tmp_path: Path) -> None:
    """A reader in the middle of a read (an export of millions of answers) holds its own snapshot; the
    build's commits go through meanwhile, and the reader sees them once it reads again."""
    path = tmp_path / "teacher.sqlite"
    with Journal(path) as journal:
        journal.append_many([journal_entry(f"k{i}", "yes", {}) for i in range(1_200)])
        with JournalView(path) as view:
            pages = view.entries()
            next(pages)  # the read is under way: its first page is out
            started = time.perf_counter()
            journal.append_many([journal_entry(f"n{i}", "no", {}) for i in range(100)])
            assert time.perf_counter() - started < 1.0  # SQLite would wait 5 s, then fail, if it were blocked
            assert 1 + sum(1 for _ in pages) >= 1_200
            assert len(view) == 1_300 and view.get("n99")["text"] == "no"


def test_reads_from_many_threads_beside_commits_from_one(tmp_path: Path) -> None:
    """The labeling threads share one writer; lookups from other threads meanwhile see whole answers only."""
    path = tmp_path / "teacher.sqlite"
    problems: list[str] = []
    with Journal(path) as journal:

        def write() -> None:
            for i in range(200):
                journal.append(journal_entry(f"k{i}", f"answer {i}", {"completion_tokens": i}))

        def read() -> None:
            for i in range(200):
                entry = journal.get(f"k{i}")
                if entry is not None and entry["text"] != f"answer {i}":
                    problems.append(f"k{i}: {entry}")

        threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(3))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not problems and len(journal) == 200


def test_budget_totals_come_from_the_database(tmp_path: Path) -> None:
    with Journal(tmp_path / "teacher.sqlite") as journal:
        assert journal.totals().billing_scale is None
        journal.append_many(
            [
                journal_entry("a", "x", {}, {"usd": 0.1, "worst_usd": 0.4}),
                journal_entry("b", "y", {}, {"usd": 0.3, "worst_usd": 0.5}),
                journal_entry("c", "z", {}),  # unpriced
            ]
        )
        totals = journal.totals()
    assert totals.answers == 3 and abs(totals.spent_usd - 0.4) < 1e-12
    assert totals.most_usd == 0.3 and abs(totals.billing_scale - 0.6) < 1e-12


def test_export_writes_every_answer_as_one_json_line(tmp_path: Path) -> None:
    entries = [journal_entry(f"k{i}", f"t{i}", {"prompt_tokens": i}, seconds=0.5) for i in range(2_345)]
    with Journal(tmp_path / "teacher.sqlite") as journal:
        journal.append_many(entries)
        out = io.BytesIO()
        assert journal.export(out) == len(entries)
    assert [orjson.loads(line) for line in out.getvalue().splitlines()] == entries


def test_a_jsonl_journal_is_imported_once_and_the_build_asks_nothing_again(tmp_path: Path, tiny_model: Path) -> None:
    """A build folder from a distillc that journaled to teacher.jsonl (a torn last line included): the next
    build imports it, keeps the file as teacher.jsonl.migrated, and pays for nothing it had."""
    texts = review_texts(12)
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        out = tmp_path / "out"
        api.build(spec, out=out, until="label")
        before = journaled(out)
        exported = distillc("journal", "export", str(out))
        assert exported.returncode == 0 and f"{len(texts)} answers written" in exported.stderr
        legacy = out / "journal" / "teacher.jsonl"
        legacy.write_text(exported.stdout + '{"key": "torn mid-wri')
        journal_path(out).unlink()
        asked = teacher.requests
        api.build(spec, out=out, until="label", force=("label",))
        assert teacher.requests == asked  # nothing re-asked
    assert sorted(json.dumps(e) for e in journaled(out)) == sorted(json.dumps(e) for e in before)
    assert not legacy.exists() and legacy.with_name("teacher.jsonl.migrated").exists()


def test_export_names_a_folder_without_a_journal(tmp_path: Path) -> None:
    result = distillc("journal", "export", str(tmp_path))
    assert result.returncode != 0 and "E207" in result.stderr and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_journal_that_cannot_grow_stops_the_build_with_e205(tmp_path: Path, tiny_model: Path) -> None:
    """The journal's files past a size limit, as on a full disk: E205 naming the journal, no traceback; the
    same command without the limit goes on from what was committed."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))  # below the WAL's index

    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(12))
        command = [sys.executable, "-m", "distillc", "build", str(spec), "--out", str(tmp_path / "out")]
        env = {**os.environ, "DISTILLC_TEST_KEY": "k"}
        failed = subprocess.run(
            [*command, "--until", "label"], capture_output=True, text=True, env=env, preexec_fn=limited, timeout=300
        )
        assert failed.returncode == 1 and "error[E205]" in failed.stderr, failed.stderr[-3000:]
        assert "teacher.sqlite" in failed.stderr and "Traceback" not in failed.stderr
        done = subprocess.run([*command, "--until", "label"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert len(journaled(tmp_path / "out")) == 12


@pytest.mark.slow
def test_labeling_50k_inputs_stays_under_a_fixed_memory_ceiling(tmp_path: Path) -> None:
    """50,000 inputs labeled through a real HTTP teacher in a fresh process: its own peak RSS (151 MB here)
    stays under 400 MB, however much the test process holds."""
    from tests.peak_memory import run_with_peak
    from tests.planted import planted

    texts, _ = planted(50_000, 0, seed=11)
    with FakeTeacher(sentiment, record=False) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=texts)
        edit_spec(spec, {"inputs.dedup": "exact", "teacher.max_concurrency": 64})
        command = [sys.executable, "-m", "distillc", "build", str(spec), "--out", str(tmp_path / "out")]
        env = {**os.environ, "DISTILLC_TEST_KEY": "k"}
        subprocess.run([*command, "--until", "inputs"], check=True, env=env, capture_output=True, timeout=600)
        done, _, peak_mb = run_with_peak([*command, "--until", "label"], env=env, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert teacher.requests == 50_000
    assert peak_mb < 400, f"labeling 50,000 inputs peaked at {peak_mb:.0f} MB"
