"""Score every exported variant as shipped: the ONNX runtime on held-out inputs, quality and latency.

What ships is what was measured: a quantized variant is judged by its own answers, not by fp32's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distillc.artifacts import read_jsonl, write_jsonl
from distillc.latency import percentiles
from distillc.runner import StageContext
from distillc.scoring import score
from distillc.stages.export import variant_dir
from distillc.tensorrt import tensorrt_config
from distillc_runtime.providers import provider_name, providers_for, runs_on_target

NAME = "verify"
VERSION = 1
READS = ("task", "evaluation.metric", "export")
NEEDS = ("export", "split")


def run(ctx: StageContext, export: Path, split: Path) -> dict[str, Any]:
    from distillc_runtime.generate import Generator

    spec = ctx.spec
    holdout = read_jsonl(split / "holdout.jsonl")
    variants = []
    for name in spec.export.quantization:
        model = variant_dir(export, name)
        trt = tensorrt_config(model / "model.onnx", spec) if spec.export.target == "tensorrt" else None
        providers = providers_for(spec.export.target, model, trt)
        generator = Generator(model, providers=providers)
        generator.predict(holdout[0]["input"])  # warm-up: first-run allocations are not request latency
        rows, latencies = [], []
        for item in holdout:
            started = time.perf_counter()
            output = generator.predict(item["input"])
            latencies.append((time.perf_counter() - started) * 1000)
            rows.append({"id": item["id"], "input": item["input"], "expected": item["output"], "output": output})
        write_jsonl(ctx.workdir / f"{name}.predictions.jsonl", rows)
        value = score(spec.task, spec.evaluation.metric, [(r["expected"], r["output"]) for r in rows])
        latency = percentiles(latencies)
        variants.append({"name": name, "score": round(value, 6), "p50_ms": latency["p50"], "p95_ms": latency["p95"]})
        ctx.log(f"{name}: {spec.evaluation.metric} {value:.3f}, p50 {latency['p50']} ms, p95 {latency['p95']} ms")
    return {
        "metric": spec.evaluation.metric,
        "n": len(holdout),
        "variants": variants,
        "target": spec.export.target,
        "measured_with": provider_name(providers[0]),
        "measured_on_target": runs_on_target(spec.export.target),
    }
