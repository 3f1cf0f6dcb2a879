"""Pruned candidates: which layers go, recovery from the trained student on inputs the teacher never saw,
every candidate evaluated, exported and verified, and the smallest that passes ships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distillc import api
from distillc.build.artifacts import read_jsonl
from distillc.cli import verify_table
from distillc.errors import DistillcError
from distillc.student.trainable import block_distances, layers_to_keep
from distillc_runtime import cpu
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher


def four_layer_model(identity: tuple[int, ...]) -> Any:
    """A random 4-layer decoder whose layers in `identity` add nothing to the residual stream."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for i in identity:
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    return model


PROMPTS = [[1, 5, 9, 13, 2], [3, 4, 8, 20, 21, 7], [11, 12, 30, 40]]


def test_the_block_that_changes_the_hidden_states_least_is_removed() -> None:
    model = four_layer_model(identity=(1, 2))
    distances = block_distances(model, PROMPTS, drop=2)
    assert distances[1] == pytest.approx(0.0, abs=1e-3)  # layers 1 and 2 leave the state as it was
    assert min(distances[0], distances[2]) > 0.01
    assert layers_to_keep(model, PROMPTS, keep=2) == [0, 3]


def test_the_last_layer_stays_even_when_it_changes_little() -> None:
    model = four_layer_model(identity=(2, 3))
    assert layers_to_keep(model, PROMPTS, keep=3) == [0, 1, 3]  # not [0, 1, 2]: the head reads layer 3's output


def test_a_candidate_with_as_many_layers_as_the_model_is_a_clear_error() -> None:
    with pytest.raises(DistillcError) as caught:
        layers_to_keep(four_layer_model(identity=()), PROMPTS, keep=4)
    assert caught.value.code == "E320"
    assert caught.value.message == "student.prune.candidates lists 4 layers, but the student has 4"


def test_candidates_are_distilled_evaluated_exported_verified_and_the_smallest_passing_ships(
    tmp_path: Path, tiny_model: Path
) -> None:
    texts = review_texts(100)
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts, min_score=0.1)
        edit_spec(
            spec,
            {
                "inputs.source.limit": 60,  # the teacher labels 60; 40 more are for recovery
                "student.prune": {"candidates": [1], "extra_inputs": 30},
                "export.quantization": ["fp32", "int8"],
                "export.max_quality_drop": 1.0,
            },
        )
        result = api.build(spec, out=tmp_path / "out")
        assert teacher.requests == 60  # the extra inputs cost no teacher call

    prune = result.stage("prune")
    assert prune.summary["student_rows"] == 30 and prune.summary["teacher_rows"] > 0
    assert [(c["name"], c["layers"]) for c in prune.summary["candidates"]] == [("l1", 1)]
    recovery = read_jsonl(prune.artifact / "recovery.jsonl")
    extra = [r for r in recovery if r.get("by") == "student"]
    held_out = {r["input"] for r in read_jsonl(result.stage("split").artifact / "holdout.jsonl")}
    labeled = {r["input"] for r in read_jsonl(result.stage("label").artifact / "labeled.jsonl")}
    assert len(extra) == 30 and all(r["input"] in texts[60:] for r in extra)
    assert not {r["input"] for r in extra} & (held_out | labeled)
    assert {r["output"] for r in extra} <= {"positive", "negative"}  # answered over the label set

    evaluated = result.stage("evaluate").summary["candidates"]
    assert [c["name"] for c in evaluated] == ["l1"]
    verify = result.stage("verify").summary
    names = [v["name"] for v in verify["variants"]]
    assert names == ["fp32", "int8", "l1-fp32", "l1-int8"]
    by_name = {v["name"]: v for v in verify["variants"]}
    assert by_name["l1-fp32"]["score"] == evaluated[0]["score"]  # the exported candidate answers as in PyTorch
    assert by_name["l1-fp32"]["layers"] == 1 and by_name["fp32"]["layers"] == 2
    assert by_name["l1-fp32"]["bytes"] < by_name["fp32"]["bytes"]
    assert by_name["l1-fp32"]["drop"] == round(by_name["fp32"]["score"] - by_name["l1-fp32"]["score"], 6)
    parity = read_jsonl(result.stage("export").artifact / "parity-l1.jsonl")
    assert len(parity) == verify["n"] and all(r["same"] for r in parity)

    # Every variant passes this lenient gate: the smallest student ships, its fastest variant.
    package = json.loads((result.package_dir / "package.json").read_text())
    fastest = min((by_name["l1-fp32"], by_name["l1-int8"]), key=lambda v: (v["p95_ms"], v["p50_ms"]))
    assert package["student"]["layers"] == 1 and package["student"]["variant"] == fastest["name"]
    table = verify_table(verify, fastest["name"]).splitlines()
    assert [line.split()[:2] for line in table[1:-1]] == [
        ["fp32", "2"],
        ["int8", "2"],
        ["l1-fp32", "1"],
        ["l1-int8", "1"],
    ]
    assert table[-1] == f"measured on {cpu.text(verify['cpu'])}" and verify["cpu"] == cpu.describe()
    assert next(line for line in table if line.startswith(fastest["name"])).endswith("<- ships")
    # Once shipped, the candidates' weights are freed like the trained ones; their record stays.
    assert not (prune.artifact / "candidates").exists() and (prune.artifact / "recovery.jsonl").exists()
    evicted = json.loads((prune.artifact / "_meta.json").read_text())["evicted"]
    assert "candidates/l1/model/model.safetensors" in evicted


def test_recovery_moves_the_cut_model_towards_the_trained_student(tmp_path: Path, tiny_model: Path) -> None:
    """The cut model's answers agree with the full student's more after recovery than before it."""
    from distillc.stages.prune import answer
    from distillc.student.models import load_causal_lm
    from distillc.student.trainable import prune_layers

    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(100))
        edit_spec(spec, {"inputs.source.limit": 60, "student.prune": {"candidates": [1], "extra_inputs": 40}})
        result = api.build(spec, out=tmp_path / "out", until="evaluate")
    full_dir = result.stage("train").artifact / "model"
    holdout = read_jsonl(result.stage("split").artifact / "holdout.jsonl")
    full, tokenizer = load_causal_lm(str(full_dir))
    cut, _ = load_causal_lm(str(full_dir))
    prune_layers(cut, result.stage("prune").summary["candidates"][0]["kept"])
    reference = [r["output"] for r in answer(result.spec, full_dir, full, tokenizer, holdout)]
    before = [r["output"] for r in answer(result.spec, full_dir, cut, tokenizer, holdout)]
    agree_before = sum(a == b for a, b in zip(before, reference, strict=True)) / len(holdout)
    agree_after = result.stage("evaluate").summary["candidates"][0]["agreement"]
    assert agree_after > agree_before


def test_extra_inputs_are_the_sources_rows_the_teacher_never_saw(tmp_path: Path) -> None:
    from distillc.spec.ir import InputsIR, SourceIR
    from distillc.stages.prune import unseen_inputs

    rows = ["alpha", "Beta", "gamma", "beta", "", "delta", "epsilon"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    file = tmp_path / "in.jsonl"
    source = InputsIR(mode="source", sources=(SourceIR(str(file), "", "jsonl", "text", limit=2),))
    known = [{"input": "alpha"}, {"input": "beta"}]  # what the teacher labeled (case aside, "Beta")
    assert [r["input"] for r in unseen_inputs(source, known, 10)] == ["gamma", "delta", "epsilon"]
    assert [r["input"] for r in unseen_inputs(source, known, 2)] == ["gamma", "delta"]
    assert unseen_inputs(source, known, 0) == []
