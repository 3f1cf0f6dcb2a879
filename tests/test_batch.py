"""teacher.batch: labeling through the Batch API of the HTTP test server (files, batches, polling)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillc import api
from distillc.errors import DistillcError
from distillc.teacher.cost import usd
from distillc.teacher.providers import batch as batch_api
from tests.conftest import edit_spec, review_texts, sentiment, set_teacher, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import journaled


def batch_spec(folder: Path, teacher: FakeTeacher, student: Path, texts: list[str], **settings: object) -> Path:
    spec = write_spec(folder, base_url=teacher.base_url, student=str(student), inputs=texts)
    set_teacher(spec, batch=True, batch_poll_s=0.02, **settings)
    return spec


def test_batch_labels_every_input_at_half_the_price(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_api, "MAX_REQUESTS", 12)  # 30 requests: batches of 12, 12 and 6
    texts = review_texts(30)
    with FakeTeacher(sentiment, batch_polls=3) as teacher:
        spec = batch_spec(tmp_path, teacher, tiny_model, texts, price_per_1m_tokens={"input": 2.0, "output": 8.0})
        result = api.build(spec, out=tmp_path / "out", until="label")
        assert len(teacher.batches) == 3 and teacher.requests == len(texts)
        assert not teacher.arrivals  # no request went to the chat endpoint directly
        sizes = [len(teacher.files[b["input_file_id"]].splitlines()) for b in teacher.batches.values()]
        assert sizes == [12, 12, 6] and all(b["polls"] == 3 for b in teacher.batches.values())
    label = result.stage("label")
    rows = [json.loads(line) for line in (label.artifact / "labeled.jsonl").read_text().splitlines()]
    assert {r["input"]: r["output"] for r in rows} == {t: sentiment(t) for t in texts}
    usage = label.summary["usage"]
    full_price = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6
    assert label.summary["usd"] == pytest.approx(full_price / 2, rel=1e-4)
    assert usd(result.spec.teacher, usage["prompt_tokens"], usage["completion_tokens"]) == pytest.approx(full_price / 2)


@pytest.mark.parametrize("died", ["after-recording-it", "before-recording-it", "while-recording-it"])
def test_a_killed_batch_build_resumes_the_same_batch(tmp_path: Path, tiny_model: Path, died: str) -> None:
    texts = review_texts(20)
    out = tmp_path / "out"
    with FakeTeacher(sentiment, batch_polls=10**9) as teacher:  # the batch stays in progress until told
        spec = batch_spec(tmp_path, teacher, tiny_model, texts)
        command = [sys.executable, "-m", "distillc", "build", str(spec), "--out", str(out), "--until", "label"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not any(b["polls"] >= 2 for b in teacher.batches.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        state = out / "journal" / "batches.jsonl"
        lines = state.read_text().splitlines()
        kept = "".join(line + "\n" for line in lines if '"batch"' not in line)
        if died == "before-recording-it":  # the batch was created, its id never written down
            state.write_text(kept)
        elif died == "while-recording-it":  # its record torn halfway
            torn = next(line for line in lines if '"batch"' in line)
            state.write_text(kept + torn[: len(torn) // 2])
        teacher.batch_polls = 0  # the endpoint finishes the batch
        finished = subprocess.run(command, capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr
        assert len(teacher.batches) == 1  # resumed, not submitted again
        assert teacher.requests == len(texts)  # every request paid once
        assert "resuming batch batch-2" in finished.stderr
    assert json.loads((out / "report.json").read_text())["label"]["labeled"] == len(texts)
    assert all(json.loads(line) for line in state.read_text().splitlines())  # no record glued to a torn one


def test_batch_errors_are_dead_lettered_and_only_they_are_submitted_again(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(30)
    failing = [t for t in texts if "camera" in t]
    assert failing
    with FakeTeacher(sentiment, fault=lambda t, n: "500" if "camera" in t and n == 0 else None) as teacher:
        spec = batch_spec(tmp_path, teacher, tiny_model, texts, max_failed_share=0.5)
        first = api.build(spec, out=tmp_path / "out", until="label")
        dead = (first.stage("label").artifact / "dead_letter.jsonl").read_text().splitlines()
        assert len(dead) == len(failing) and all("batch error" in json.loads(d)["reason"] for d in dead)
        again = api.build(spec, out=tmp_path / "out", until="label", force=("label",))
        second_batch = list(teacher.batches.values())[1]
        resubmitted = teacher.files[second_batch["input_file_id"]].decode().splitlines()
    assert sorted(json.loads(r)["body"]["messages"][-1]["content"] for r in resubmitted) == sorted(failing)
    assert again.stage("label").summary["labeled"] == len(texts)


def test_plan_prices_batch_labeling_at_half(tmp_path: Path, tiny_model: Path) -> None:
    from distillc.plan import plan, render

    texts = review_texts(20)
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student=str(tiny_model), inputs=texts)
    set_teacher(spec, price_per_1m_tokens={"input": 2.0, "output": 8.0})
    full = plan(spec, out=tmp_path / "out").teacher
    set_teacher(spec, batch=True)
    half = plan(spec, out=tmp_path / "out")
    assert half.teacher is not None and full is not None
    assert half.teacher.usd == pytest.approx(full.usd / 2)
    assert "labels at half that (Batch API)" in render(half)


def test_a_batch_submission_is_checked_against_what_remains_of_the_budget(tmp_path: Path, tiny_model: Path) -> None:
    """Billed 10,000 prompt tokens a request at $10 per 1M, half price: $0.05 each, far over what the
    prompts show. A batch of one shows it; then only what fits under the $0.33 cap is submitted, and the
    next two runs submit nothing."""
    texts = review_texts(20)
    out = tmp_path / "out"
    with FakeTeacher(sentiment, prompt_tokens=10_000) as teacher:
        spec = batch_spec(tmp_path, teacher, tiny_model, texts, price_per_1m_tokens={"input": 10})
        edit_spec(spec, {"budget.max_usd": 0.33})
        for _ in range(3):
            with pytest.raises(DistillcError) as caught:
                api.build(spec, out=out, until="label")
            assert caught.value.code == "E503"
            assert sum(e.get("usd", 0.0) for e in journaled(out)) <= 0.33
        sizes = [len(teacher.files[b["input_file_id"]].splitlines()) for b in teacher.batches.values()]
    assert sizes[0] == 1 and len(sizes) == 2 and 4 <= sizes[1] <= 5  # $0.30 in all, or $0.25 for long prompts
    assert teacher.requests == sum(sizes)
