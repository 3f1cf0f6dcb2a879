"""Exported variants are scored as shipped, and the fastest one that meets the spec ships."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from distillc import api
from distillc.errors import GateFailed
from distillc.package.policy import SERVER_MEMORY_MI
from distillc.quality.gates import choose_variant, min_score
from distillc.spec import load_spec
from tests.conftest import VALID, edit_spec, review_texts, sentiment, write, write_spec
from tests.fake_teacher import FakeTeacher


def measured(*variants: tuple[str, float, float], on_target: bool = True, width: float = 0.1) -> dict:
    """Verify's summary for variants (name, score, p95 ms), each score's 95% interval `width` wide."""
    rows = [
        {"name": n, "score": s, "interval": [s - width / 2, min(1.0, s + width / 2)],
         "drop": round(variants[0][1] - s, 6), "p50_ms": p95 / 2, "p95_ms": p95, "listed": True,
         "kind": "linear" if n == "linear" else "decoder", "parameters": 20_000 if n == "linear" else 135_000_000}
        for n, s, p95 in variants
    ]  # fmt: skip
    return {"variants": rows, "metric": "accuracy", "n": 20, "measured_on_target": on_target}


def spec_with(tmp_path: Path, min_score: float = 0.8, p95: float = 0.0, max_drop: float = 0.01, gate: str = "point"):  # noqa: ANN201
    spec = load_spec(write(tmp_path, VALID))
    return replace(
        spec,
        evaluation=replace(spec.evaluation, min_score=min_score, gate=gate),
        deploy=replace(spec.deploy, latency_p95_ms=p95),
        export=replace(spec.export, max_quality_drop=max_drop),
    )


def test_the_fastest_variant_that_meets_min_score_and_the_drop_limit_ships(tmp_path: Path) -> None:
    verify = measured(("fp32", 0.95, 90.0), ("int8", 0.945, 60.0), ("int4", 0.70, 30.0))
    assert choose_variant(spec_with(tmp_path), verify)["name"] == "int8"


def test_the_smallest_pruned_candidate_that_passes_ships(tmp_path: Path) -> None:
    """Candidates are judged as every variant is (min_score, drop below the full student's fp32, latency);
    of those that pass, the one with the fewest layers ships, and of its variants the fastest."""
    verify = measured(
        ("fp32", 0.95, 90.0), ("int8", 0.945, 60.0),
        ("l20-fp32", 0.935, 70.0), ("l20-int8", 0.93, 45.0),
        ("l10-fp32", 0.85, 40.0), ("l10-int8", 0.84, 25.0),
    )  # fmt: skip
    for v in verify["variants"]:
        v["layers"] = int(v["name"].split("-")[0][1:]) if v["name"].startswith("l") else 30
        v["parameters"] = v["layers"] * 4_500_000
    assert choose_variant(spec_with(tmp_path), verify)["name"] == "int8"  # drop limit 0.01: no candidate passes
    assert choose_variant(spec_with(tmp_path, max_drop=0.02), verify)["name"] == "l20-int8"
    assert choose_variant(spec_with(tmp_path, max_drop=0.2), verify)["name"] == "l10-int8"
    assert choose_variant(spec_with(tmp_path, max_drop=0.2, min_score=0.9), verify)["name"] == "l20-int8"
    # The latency budget rules out the larger students: the 10-layer one ships though its drop is larger.
    assert choose_variant(spec_with(tmp_path, max_drop=0.2, p95=30.0), verify)["name"] == "l10-int8"
    with pytest.raises(GateFailed) as caught:
        choose_variant(spec_with(tmp_path, max_drop=0.02, p95=30.0), verify)
    assert caught.value.code == "E504"


def test_a_linear_student_ships_when_it_passes_the_same_gates(tmp_path: Path) -> None:
    """The fewest weights first, whatever the kind: the linear student ships when it meets min_score, the drop
    limit below the decoder's fp32 and the latency budget, and the decoder's fastest variant when it does not."""
    verify = measured(("fp32", 0.95, 90.0), ("int8", 0.945, 60.0), ("linear", 0.90, 0.2))
    assert choose_variant(spec_with(tmp_path), verify)["name"] == "int8"  # 0.05 below fp32: over the 0.01 limit
    assert choose_variant(spec_with(tmp_path, max_drop=0.05), verify)["name"] == "linear"
    assert choose_variant(spec_with(tmp_path, max_drop=0.05, min_score=0.92), verify)["name"] == "int8"
    # A decoder too slow for the budget: the linear student is what passes.
    assert choose_variant(spec_with(tmp_path, max_drop=0.05, p95=10.0), verify)["name"] == "linear"
    with pytest.raises(GateFailed) as caught:
        choose_variant(spec_with(tmp_path, p95=10.0), verify)
    assert caught.value.code == "E504"


def test_nothing_is_exported_only_when_no_student_reaches_min_score(tmp_path: Path) -> None:
    """E501 (before export) looks at every student evaluate scored: a linear student that passes keeps the build
    going even when the decoder does not, for the gate to judge it as exported."""
    linear = {"name": "linear", "score": 0.85, "interval": [0.8, 0.9]}
    summary = {"metric": "accuracy", "n": 40, "score": 0.6, "interval": [0.5, 0.7], "candidates": [linear]}
    min_score(spec_with(tmp_path, min_score=0.8), summary, tmp_path)  # the linear student reaches it
    with pytest.raises(GateFailed) as caught:
        min_score(spec_with(tmp_path, min_score=0.9), summary, tmp_path)
    assert caught.value.code == "E501"
    assert "student accuracy 0.600, linear 0.850 is below evaluation.min_score 0.9" in caught.value.message


def test_a_variant_above_min_score_but_too_far_below_fp32_does_not_ship(tmp_path: Path) -> None:
    verify = measured(("fp32", 0.95, 90.0), ("int8", 0.90, 60.0))
    assert choose_variant(spec_with(tmp_path), verify)["name"] == "fp32"
    assert choose_variant(spec_with(tmp_path, max_drop=0.05), verify)["name"] == "int8"
    # fp32 scored as the reference but not listed: nothing listed is good enough, and the message says why.
    verify["variants"][0]["listed"] = False
    with pytest.raises(GateFailed) as caught:
        choose_variant(spec_with(tmp_path), verify)
    assert caught.value.code == "E505"
    assert "(drop: int8 0.050)" in caught.value.message


def test_quality_gate_names_every_variant_score(tmp_path: Path) -> None:
    with pytest.raises(GateFailed) as caught:
        choose_variant(spec_with(tmp_path, min_score=0.99), measured(("fp32", 0.95, 90.0), ("int8", 0.9, 60.0)))
    assert caught.value.code == "E506"
    assert "(accuracy: fp32 0.950, int8 0.900)" in caught.value.message


def test_the_gate_takes_the_score_or_the_lower_bound_of_its_interval(tmp_path: Path) -> None:
    """0.85 with the interval [0.75, 0.95]: over min_score 0.8 as a point, under it as a lower bound."""
    variants = measured(("fp32", 0.85, 90.0), width=0.2)
    assert choose_variant(spec_with(tmp_path, gate="point"), variants)["name"] == "fp32"
    with pytest.raises(GateFailed) as caught:
        choose_variant(spec_with(tmp_path, gate="lower_bound"), variants)
    assert caught.value.code == "E506"
    assert "(accuracy, lower bound of its 95% interval: fp32 0.750)" in caught.value.message
    # A narrower interval (more held-out inputs) passes the lower-bound gate too.
    assert choose_variant(spec_with(tmp_path, gate="lower_bound"), measured(("fp32", 0.85, 90.0), width=0.08))


def test_latency_budget_is_a_gate_when_measured_on_the_target(tmp_path: Path) -> None:
    slow = measured(("fp32", 0.95, 90.0), ("int8", 0.945, 60.0))
    with pytest.raises(GateFailed) as caught:
        choose_variant(spec_with(tmp_path, p95=50.0), slow)
    assert caught.value.code == "E504"
    assert "fp32 p50 45.0 / p95 90.0 ms" in caught.value.message
    assert choose_variant(spec_with(tmp_path, p95=70.0), slow)["name"] == "int8"
    # Measured elsewhere (a GPU target built on a CPU machine): the numbers say nothing of the target.
    elsewhere = measured(("fp32", 0.95, 90.0), on_target=False)
    assert choose_variant(spec_with(tmp_path, p95=50.0), elsewhere)["name"] == "fp32"


def test_int8_and_int4_variants_are_exported_scored_and_one_ships(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(80))
        edit_spec(spec, {"export.quantization": ["fp32", "int8", "int4"]})
        result = api.build(spec, out=tmp_path / "out")
    verify = result.stage("verify").summary
    assert [v["name"] for v in verify["variants"]] == ["fp32", "int8", "int4"]
    assert verify["measured_on_target"] is True
    sizes = result.stage("export").summary["variant_bytes"]
    assert sizes["int8"] < sizes["fp32"] and sizes["int4"] < sizes["fp32"]
    shipped = choose_variant(result.spec, verify)
    package = json.loads((result.package_dir / "package.json").read_text())
    assert package["student"]["variant"] == shipped["name"]
    assert package["evaluation"]["score"] == shipped["score"]
    fp32 = verify["variants"][0]
    assert fp32["score"] == result.stage("evaluate").summary["score"]  # fp32 answers exactly as PyTorch did
    assert fp32["drop"] == 0.0 and fp32["agreement"] == 1.0
    for variant in verify["variants"]:
        assert variant["drop"] == round(fp32["score"] - variant["score"], 6)
        assert variant["batch"]["size"] == result.spec.deploy.max_batch_size and variant["batch"]["inputs_per_s"] > 0
        # A fresh process's peak: Python and onnxruntime at the least, and nothing of this (torch-laden) one.
        assert 30 < variant["memory_mb"] < 400
    assert (result.package_dir / "model" / "prefill.onnx").exists() == (shipped["name"] == "int8")
    memory = yaml.safe_load((result.package_dir / "k8s" / "deployment.yaml").read_text())
    requested = memory["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
    assert int(requested.removesuffix("Mi")) == math.ceil(shipped["memory_mb"]) + SERVER_MEMORY_MI


def test_a_deliberately_degraded_variant_is_measured_and_rejected(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 here is fp32 with its output head zeroed: every answer is the same label, so it loses quality."""
    import onnx
    from onnx import numpy_helper

    from distillc.stages import export

    def degraded(source: Path, target: Path, variant: str) -> None:
        target.mkdir(parents=True)
        for name in ("tokenizer.json", "generation.json"):
            (target / name).write_bytes((source / name).read_bytes())
        model = onnx.load(str(source / "model.onnx"))
        for init in model.graph.initializer:
            array = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(array * 0 if init.name.endswith("norm.weight") else array, init.name))
        onnx.save(model, str(target / "model.onnx"))

    monkeypatch.setattr(export, "quantize", degraded)
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(80), min_score=0.1
        )
        edit_spec(spec, {"export.quantization": ["int8", "fp32"]})
        result = api.build(spec, out=tmp_path / "out")
        fp32, int8 = result.stage("verify").summary["variants"]
        assert int8["name"] == "int8" and int8["drop"] > 0.2 and int8["agreement"] < 0.8
        package = json.loads((result.package_dir / "package.json").read_text())
        assert package["student"]["variant"] == "fp32"
        # Without fp32 to fall back on, the build stops at the gate and says by how much int8 fell.
        edit_spec(spec, {"export.quantization": ["int8"]})
        with pytest.raises(GateFailed) as caught:
            api.build(spec, out=tmp_path / "out")
    assert caught.value.code == "E505"
    # The gate decides once, from verify's measurements: loosening only its threshold re-runs the gate and
    # the package, not the measurements, and the package ships what the gate's decision names.
    edit_spec(spec, {"export.max_quality_drop": 1.0})
    again = api.build(spec, out=tmp_path / "out")  # labels cached: no teacher needed
    assert [r.name for r in again.stages if r.status == "miss"] == ["gate", "package"]
    assert json.loads((again.package_dir / "package.json").read_text())["student"]["variant"] == "int8"
    assert again.stage("gate").summary["variant"] == "int8"
