"""A cascade compiled under the gate: the spec's deploy.cascade, checked where it is written, and the threshold
the gate picks for the variant that ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillc.errors import GateFailed
from distillc.quality.confidence import wilson
from distillc.quality.gates import choose_variant
from distillc.spec import load_spec, validate_file
from distillc.spec.diagnostics import line_col
from tests.conftest import edit_spec, write_spec

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
    curve = [
        {
            "threshold": t,
            "answered": n,
            "agree": k,
            "coverage": n / total,
            "agreement": k / n,
            "interval": list(wilson(k, n)),
        }
        for t, n, k in points
    ]
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
        "confidence": {"score": "sum", "curve": curve},
    }


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
