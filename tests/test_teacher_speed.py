"""The teacher's latency and cost per answer, measured for the report's headline."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillc import api
from tests.conftest import local_teacher_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import journaled


def _journal(out: Path) -> list[dict]:
    return journaled(out)


def test_an_endpoints_latency_and_price_come_from_its_answers(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(12)
    with FakeTeacher(sentiment, delay_s=0.12) as teacher:
        spec = write_spec(
            tmp_path,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=texts,
            changes={"teacher.price_per_1m_tokens": {"input": 2.0, "output": 8.0}},
        )
        result = api.build(spec, out=tmp_path / "out", until="label")
    speed = result.stage("label").summary["teacher"]
    journal = _journal(tmp_path / "out")
    assert len(journal) == len(texts) and all(e["seconds"] >= 0.12 for e in journal)
    assert speed["latency_ms"]["n"] == len(texts) and speed["latency_ms"]["measured"] == "per request, while labeling"
    assert 120 <= speed["latency_ms"]["p50"] <= speed["latency_ms"]["p95"] < 5000
    expected_usd = sum(e["usage"]["prompt_tokens"] * 2.0 + e["usage"]["completion_tokens"] * 8.0 for e in journal)
    assert speed["usd_per_answer"] == pytest.approx(expected_usd / 1e6 / len(texts), rel=1e-3)


def test_a_local_teacher_is_timed_one_request_at_a_time(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(24)
    spec = local_teacher_spec(tmp_path, tiny_model, texts)
    speed = api.build(spec, out=tmp_path / "out", until="label").stage("label").summary["teacher"]
    assert speed["latency_ms"]["n"] == 20 and speed["latency_ms"]["measured"] == "one at a time, after labeling"
    assert 0 < speed["latency_ms"]["p50"] <= speed["latency_ms"]["p95"]
    assert speed["seconds_per_answer"] > 0 and speed["usd_per_answer"] is None
    assert all(e["seconds"] > 0 for e in _journal(tmp_path / "out"))
