"""A pruned student against the full one it was cut from: quality on held-out inputs, and latency as shipped.

    python bench/prune_recovery.py SPEC --model TRAINED --split SPLIT --out OUT [--keep 15] [--extra N]

TRAINED is a build's trained student (build/<name>/cache/train/<key>/model: build with --keep-weights),
SPLIT that build's split artifact (train.jsonl, holdout.jsonl). The student is cut to --keep layers and
recovered as the prune stage does it (distillc.stages.prune): the block of layers that changes the hidden
states least goes, and the cut model trains on the teacher-labeled rows plus --extra inputs from the spec's
source beyond its limit, answered by the trained student, distilling the trained student's logits on the
answer tokens. Both models are then scored on the held-out inputs (paired bootstrap for the difference) and
exported to ONNX (fp32 and int8), and their request latency is measured one input at a time, the two models
alternating.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.data.sources import Reading, kept_inputs
from distillc.quality.metrics import gated
from distillc.spec.load import load_spec
from distillc.stages.prune import PROBE_ROWS, answer, recovery_job, unseen_inputs
from distillc.student.fused_export import build_fused_onnx
from distillc.student.models import load_causal_lm
from distillc.student.onnx_export import write_generation_config
from distillc.student.prompt import load_prompt, prompt_ids
from distillc.student.quantize import quantize
from distillc.student.train_job import run_training
from distillc.student.trainable import layers_to_keep


def labeled_inputs(spec: Any) -> list[dict[str, str]]:
    """The inputs the inputs stage keeps (the first `limit`): those the teacher labeled."""
    return kept_inputs(spec.inputs, Reading())


def score(spec: Any, holdout: list[dict[str, Any]], answers: list[dict[str, Any]]) -> dict[str, Any]:
    return gated(spec.task, "accuracy", [(h["output"], a["output"]) for h, a in zip(holdout, answers, strict=True)])


def paired_difference(holdout: list[dict[str, Any]], a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[float]:
    """Accuracy of b minus a, with a 95% paired bootstrap interval over the held-out inputs."""
    right_a = np.array([x["output"] == h["output"] for h, x in zip(holdout, a, strict=True)], dtype=float)
    right_b = np.array([x["output"] == h["output"] for h, x in zip(holdout, b, strict=True)], dtype=float)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(holdout), size=(2000, len(holdout)))
    diffs = (right_b[picks] - right_a[picks]).mean(axis=1)
    return [
        round(float(right_b.mean() - right_a.mean()), 4),
        *(round(float(q), 4) for q in np.percentile(diffs, [2.5, 97.5])),
    ]


def export(spec: Any, model_dir: Path, out: Path) -> dict[str, Path]:
    """fp32 and int8 ONNX packages of `model_dir`, as the export stage writes them for a CPU target."""
    fp32 = out / "fp32"
    fp32.mkdir(parents=True, exist_ok=True)
    build_fused_onnx(model_dir, fp32 / "model.onnx", out / "export.log")
    shutil.copy2(model_dir / "tokenizer.json", fp32 / "tokenizer.json")
    write_generation_config(model_dir, fp32, spec)
    quantize(fp32, out / "int8", "int8")
    return {"fp32": fp32, "int8": out / "int8"}


def latencies(variants: dict[str, Path], texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """p50 and p95 milliseconds per variant, one input at a time, the variants taking turns on each input."""
    from distillc_runtime.generate import Generator

    generators = {name: Generator(path) for name, path in variants.items()}
    for g in generators.values():
        g.predict(texts[0])
    times: dict[str, list[float]] = {name: [] for name in generators}
    for _ in range(rounds):
        for text in texts:
            for name, g in generators.items():
                started = time.perf_counter()
                g.predict(text)
                times[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"p50_ms": round(statistics.median(t), 2), "p95_ms": round(float(np.percentile(t, 95)), 2)}
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--model", type=Path, required=True, help="the trained student's directory")
    parser.add_argument("--split", type=Path, required=True, help="the build's split artifact")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", type=int, default=15)
    parser.add_argument("--extra", type=int, help="extra inputs (default: the spec's student.prune.extra_inputs)")
    parser.add_argument("--epochs", type=int, help="recovery epochs (default: the spec's)")
    parser.add_argument("--latency-inputs", type=int, default=100)
    args = parser.parse_args()

    spec = load_spec(args.spec)
    prune = spec.student.prune
    assert prune is not None, "the spec needs student.prune"
    prune = replace(
        prune, **{k: v for k, v in (("extra_inputs", args.extra), ("epochs", args.epochs)) if v is not None}
    )
    spec = replace(spec, student=replace(spec.student, prune=prune))
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    full, tokenizer = load_causal_lm(str(args.model))
    holdout = read_jsonl(args.split / "holdout.jsonl")
    train = read_jsonl(args.split / "train.jsonl")
    results: dict[str, Any] = {"keep": args.keep, "of": full.config.num_hidden_layers, "teacher_rows": len(train)}

    started = time.perf_counter()
    full_answers = answer(spec, args.model, full, tokenizer, holdout)
    results["full"] = score(spec, holdout, full_answers)
    log(f"full student: accuracy {results['full']['value']:.3f} ({time.perf_counter() - started:.0f} s)")

    started = time.perf_counter()
    extra = answer(
        spec, args.model, full, tokenizer, unseen_inputs(spec.inputs, labeled_inputs(spec), prune.extra_inputs)
    )
    results["student_rows"] = len(extra)
    results["answer_seconds"] = round(time.perf_counter() - started, 1)
    log(f"{len(extra)} extra inputs answered by the full student in {results['answer_seconds']} s")
    rows = args.out / "recovery.jsonl"
    write_jsonl(rows, [*train, *extra])

    prompt = load_prompt(args.model)
    probes = [prompt_ids(tokenizer, prompt, r["input"]) for r in train[:PROBE_ROWS]]
    kept = layers_to_keep(full, probes, args.keep)
    results["kept"] = kept
    log(f"keeping layers {kept}")
    cut = args.out / "cut"
    job = recovery_job(spec, args.model, kept, rows, cut, args.out / "checkpoints")
    started = time.perf_counter()
    trained = run_training(job, 1, log)
    results["recovery"] = {k: trained[k] for k in ("examples", "steps", "best_step", "tokens_per_second")}
    results["recovery"]["seconds"] = round(time.perf_counter() - started, 1)

    small, _ = load_causal_lm(str(cut / "model"))
    small_answers = answer(spec, cut / "model", small, tokenizer, holdout)
    results["pruned"] = score(spec, holdout, small_answers)
    results["pruned_minus_full"] = paired_difference(holdout, full_answers, small_answers)
    results["share_of_full"] = round(results["pruned"]["value"] / results["full"]["value"], 4)
    log(f"pruned: accuracy {results['pruned']['value']:.3f}, {results['share_of_full']:.1%} of the full student's")

    variants = {}
    for name, model_dir in (("full", args.model), ("pruned", cut / "model")):
        for quant, path in export(spec, model_dir, args.out / "onnx" / name).items():
            variants[f"{name}-{quant}"] = path
    timing = latencies(variants, [h["input"] for h in holdout[: args.latency_inputs]], rounds=1)
    results["latency"] = timing
    for quant in ("fp32", "int8"):
        results[f"speedup_{quant}"] = round(timing[f"full-{quant}"]["p50_ms"] / timing[f"pruned-{quant}"]["p50_ms"], 3)
    (args.out / "result.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
