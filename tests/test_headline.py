"""The headline's cost and speed figures, computed by hand from the measured numbers they come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillc.report.headline import headline, usd_text
from distillc.spec.load import load_spec
from tests.conftest import edit_spec, write_spec


def _report(teacher: dict) -> dict:
    variant = {"name": "int8", "layers": 4, "bytes": 9_000_000, "score": 0.9, "interval": [0.8, 0.95]}
    variant |= {"p50_ms": 20.0, "p95_ms": 30.0, "batch": {"size": 8, "inputs_per_s": 40.0}}
    return {
        "verify": {"metric": "accuracy", "n": 50, "measured_with": "CPUExecutionProvider", "variants": [variant]},
        "gate": {"variant": "int8"},
        "label": {"teacher": teacher},
        "package": {"bytes": 9_500_000},
    }


def _spec(tmp_path: Path, tiny_model: Path, changes: dict) -> object:
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student=str(tiny_model), inputs=["a", "b"])
    edit_spec(spec, changes)
    return load_spec(spec)


def test_an_endpoint_teacher_is_priced_by_its_answers_the_student_by_machine_time(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = _spec(tmp_path, tiny_model, {"deploy.usd_per_hour": 0.36})
    teacher = {"latency_ms": {"p50": 400.0, "p95": 900.0, "n": 50, "measured": "x"}, "usd_per_answer": 0.0001}
    head = headline(_report(teacher | {"seconds_per_answer": 0.4, "parameters": None}), spec)
    # 40 inputs/s: 25 s of machine time per 1,000 requests, at $0.36/h = $0.0025.
    assert head["student"]["seconds_per_1k"] == 25.0 and head["student"]["usd_per_1k"] == pytest.approx(0.0025)
    assert head["teacher"]["usd_per_1k"] == pytest.approx(0.1)
    assert head["cheaper"] == 40.0 and head["faster"] == 20.0
    assert head["student"]["bytes"] == 9_500_000


def test_a_local_teacher_is_priced_by_its_compute_on_the_same_machine(tmp_path: Path, tiny_model: Path) -> None:
    spec = _spec(
        tmp_path, tiny_model, {"deploy.usd_per_hour": 0.36, "teacher": {"provider": "local", "model": str(tiny_model)}}
    )
    teacher = {"latency_ms": None, "usd_per_answer": None, "seconds_per_answer": 0.1, "parameters": 1000}
    head = headline(_report(teacher), spec)
    assert head["teacher"]["seconds_per_1k"] == 100.0 and head["teacher"]["usd_per_1k"] == pytest.approx(0.01)
    assert head["cheaper"] == 4.0 and head["faster"] is None  # no teacher latency: no ratio made up


def test_a_tiny_cost_keeps_its_precision(tmp_path: Path, tiny_model: Path) -> None:
    """Rounded to decimals, $6.6e-06 became $7e-06, and doubling the price read as +86%."""
    report = _report({"latency_ms": None, "usd_per_answer": None})
    report["verify"]["variants"][0]["batch"]["inputs_per_s"] = 4000 / 0.95  # 0.2375 s of machine per 1,000
    costs = [
        headline(report, _spec(tmp_path / str(price), tiny_model, {"deploy.usd_per_hour": price}))["student"][
            "usd_per_1k"
        ]
        for price in (0.1, 0.2)
    ]
    assert costs == [pytest.approx(6.597e-06, rel=1e-4), pytest.approx(1.319e-05, rel=1e-4)]
    assert costs[1] / costs[0] == pytest.approx(2.0, rel=1e-3)


def test_without_a_machine_price_there_is_no_dollar_figure(tmp_path: Path, tiny_model: Path) -> None:
    head = headline(_report({"latency_ms": None, "usd_per_answer": None}), _spec(tmp_path, tiny_model, {}))
    assert head["student"]["usd_per_1k"] is None and head["cheaper"] is None
    assert headline({"verify": {}}, _spec(tmp_path, tiny_model, {})) is None


def test_dollars_read_at_a_glance() -> None:
    values = (None, 0, 0.1, 12.345, 0.013, 0.000642)
    assert [usd_text(x) for x in values] == ["-", "$0.00", "$0.10", "$12.35", "$0.013", "$0.00064"]
