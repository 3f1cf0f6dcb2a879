"""Score every exported variant as shipped: the ONNX runtime on held-out inputs, quality and latency.

What ships is what was measured: a quantized variant is judged by its own answers, not by fp32's, and
so is each pruned candidate's. The full student's fp32 is always scored, listed or not: it is the
reference every variant's quality drop and agreement are measured against. Latency is measured one
request at a time and in batches of `deploy.max_batch_size`, the two ways the package's server runs;
memory as the peak of a fresh process answering one such batch.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distillc.artifacts.export import read_exported, variant_dir
from distillc.artifacts.verify import VERIFIED, Verified, write_predictions, write_verified
from distillc.build.artifacts import read_jsonl
from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.quality.confidence import agreement, confidence_summary
from distillc.quality.latency import percentiles, quantiles
from distillc.quality.metrics import gated
from distillc.quality.reference import reference_pairs
from distillc.student.onnx_export import generation_config
from distillc.student.prompt import input_limit
from distillc.student.tensorrt import tensorrt_config
from distillc.targets import TARGETS
from distillc.task import task_type
from distillc_runtime import cpu
from distillc_runtime.confidence import SCORES, Answer
from distillc_runtime.providers import provider_name, providers_for


def run(ctx: StageContext, export: Path, split: Path) -> dict[str, Any]:
    from distillc_runtime.model import load_model

    spec = ctx.spec
    holdout = read_jsonl(split / "holdout.jsonl")
    texts = [item["input"] for item in holdout]
    batch_size = spec.deploy.max_batch_size
    variants: list[dict[str, Any]] = []
    reference: list[str] = []
    exported = [(student, v) for student in read_exported(export) for v in student["variants"]]
    for student, exported_variant in exported:
        name = exported_variant["name"]
        model = variant_dir(export, name)
        decoder = student["kind"] == "decoder"  # a linear student has no tokens, no limit and runs on the CPU
        trt = tensorrt_config(model / "model.onnx", spec) if decoder and TARGETS[spec.export.target].tensorrt else None
        providers = providers_for(spec.export.target, model, trt)
        # The package's input limit: an input it would refuse gets no answer here either, and fails the gate.
        limit = input_limit(spec.deploy.max_input_tokens, generation_config(model)) if decoder else None
        generator = load_model(model, providers=providers, max_input_tokens=limit)
        refused = {i for i, t in enumerate(texts) if generator.length_problem(generator.prepare(t))}
        answerable = [t for i, t in enumerate(texts) if i not in refused]
        if not answerable:
            raise DistillcError(
                "E315",
                f"the package would refuse all {len(texts)} held-out inputs (the first: "
                f"{generator.length_problem(generator.prepare(texts[0]))})",
                help="raise deploy.max_input_tokens (by default student.max_seq_len) to fit the prompt and an input",
            )
        generator.predict(answerable[0])  # warm-up: first-run allocations are not request latency
        answers, latencies = one_at_a_time(generator, texts, refused)
        outputs = [answer.text for answer in answers]
        batched = in_batches(generator, answerable, batch_size)
        provider = generator.session.get_providers()[0]
        del generator  # free this variant's sessions before the next one loads
        gc.collect()
        rows = [
            {"id": item["id"], "input": item["input"], "expected": item["output"], "output": answer.text}
            | ({"refused": True} if i in refused else confidences(answer))
            for i, (item, answer) in enumerate(zip(holdout, answers, strict=True))
        ]
        write_predictions(ctx.workdir, name, rows)
        measured = gated(
            spec.task, spec.evaluation.metric, reference_pairs(spec.evaluation.reference, holdout, outputs)
        )
        value = measured["value"]
        answered = [row for row in rows if "scores" in row]
        # A label's confidence is its probability over the label set; JSON and text choose their score.
        candidates = ("sum",) if task_type(spec.task).choices(spec.task) else SCORES
        confidence = confidence_summary(answered, agreement(spec), candidates)
        if not variants:  # the full student's fp32: what every other variant is compared with
            reference = outputs
        latency = percentiles(latencies)
        variant = {
            "name": name,
            "student": student["student"],
            "kind": student["kind"],
            "layers": student["layers"],
            "parameters": student["parameters"],
            "bytes": exported_variant["bytes"],
            # export.quantization lists the decoders' variants; a linear student has its one
            "listed": not decoder or exported_variant["weights"] in spec.export.quantization,
            "provider": provider,
            "score": value,
            "interval": measured["interval"],
            "drop": round(variants[0]["score"] - value, 6) + 0.0 if variants else 0.0,  # + 0.0: no "-0.0"
            "agreement": round(sum(a == b for a, b in zip(outputs, reference, strict=True)) / len(outputs), 6),
            "p50_ms": latency["p50"],
            "p95_ms": latency["p95"],
            "latency_quantiles_ms": quantiles(latencies),  # a cascade's latency adds the teacher's to these
            "batch": batched,
            "memory_mb": peak_memory_mb(model, answerable[:batch_size]),
            "refused": len(refused),  # over the package's input limit: no answer, counted as wrong
            "confidence": confidence,  # against the teacher's answers: what a cascade hands over on
        }
        variants.append(variant)
        if refused:
            ctx.emit(
                Event(
                    "warning",
                    ctx.stage,
                    f"{name} refuses {len(refused)} of {len(texts)} held-out inputs, as its package would (over "
                    f"its input limit of {limit} tokens with the prompt): they count as wrong",
                )
            )
        ctx.log(
            f"{name}: confidence ({confidence['score']}) AUROC {confidence['auroc'][confidence['score']]}; "
            f"{spec.evaluation.metric} {value:.3f} (drop {variant['drop']:.3f}, agrees with fp32 on "
            f"{variant['agreement']:.1%}), p50 {latency['p50']} ms, p95 {latency['p95']} ms; batch {batch_size}: "
            f"{batched['p50_ms']} ms p50, {batched['inputs_per_s']} inputs/s"
        )
    verified = Verified(
        metric=spec.evaluation.metric,
        n=len(reference_pairs(spec.evaluation.reference, holdout, texts)),  # the inputs scored
        variants=variants,
        target=spec.export.target,
        measured_with=provider_name(providers[0]),
        measured_on_target=TARGETS[spec.export.target].latency_measurable_here(),
        cpu=cpu.describe(),  # the kernels a CPU runs differ by instruction set: where these answers came from
    )
    write_verified(ctx.workdir, verified)  # what the gate decides on
    return dict(verified)


# VmHWM, not getrusage's ru_maxrss: on Linux the latter keeps the high-water mark of the process before
# exec, here the whole compiler with torch loaded.
PEAK_MEMORY = """
import sys
from pathlib import Path
from distillc_runtime.model import load_model
load_model(sys.argv[1]).predict_batch(sys.argv[2:])
print(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")))
"""


def peak_memory_mb(model: Path, texts: list[str]) -> float | None:
    """Peak resident memory of a fresh process that loads the variant and answers one full batch: the
    model as the runtime holds it, with Python, onnxruntime and the tokenizer (what a deployment must
    request, before the web server's share). On the CPU; None where it cannot be measured."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_MEMORY, str(model), *texts], capture_output=True, text=True, timeout=600
        )
        return round(int(done.stdout.split()[-1]) / 1024, 1) if done.returncode == 0 else None  # KiB on Linux
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def confidences(answer: Answer) -> dict[str, Any]:
    """An answer's confidence as the package reports it, and under each score it could be given (the build
    measures which one ranks disagreements best: distillc.quality.confidence)."""
    return {
        "confidence": round(answer.confidence, 6),
        "scores": {how: round(answer.scored(how), 6) for how in SCORES},
    }


def one_at_a_time(generator: Any, texts: list[str], refused: set[int]) -> tuple[list[Answer], list[float]]:
    """Each input answered alone, as a lone request is: (answers, milliseconds each); the `refused` ones
    (over the package's input limit) get no answer, "", and no time."""
    answers, latencies = [], []
    for i, text in enumerate(texts):
        if i in refused:
            answers.append(Answer(""))
            continue
        started = time.perf_counter()
        answers.append(generator.answer_prompts([generator.prepare(text)])[0])
        latencies.append((time.perf_counter() - started) * 1000)
    return answers, latencies


def in_batches(generator: Any, texts: list[str], size: int) -> dict[str, Any]:
    """The inputs answered `size` at a time, as the server's micro-batches are under load."""
    latencies, started = [], time.perf_counter()
    for start in range(0, len(texts), size):
        began = time.perf_counter()
        generator.predict_batch(texts[start : start + size])
        latencies.append((time.perf_counter() - began) * 1000)
    seconds = time.perf_counter() - started
    summary = percentiles(latencies)
    return {
        "size": size,
        "p50_ms": summary["p50"],
        "p95_ms": summary["p95"],
        "inputs_per_s": round(len(texts) / seconds, 1) if seconds else 0.0,
    }


STAGE = Stage(
    name="verify",
    version=10,  # 10: graded text agreement; 9: each answer's confidence; 8: scored against evaluation.reference
    reads=(
        "task",
        "evaluation.metric",
        "evaluation.reference",
        "evaluation.agree_at",
        "export.quantization",
        "export.target",
        "deploy.max_batch_size",
        # The TensorRT profile a tensorrt package is verified with covers these lengths.
        "student.max_seq_len",
        "deploy.max_new_tokens",
        "deploy.max_input_tokens",
    ),
    needs=("export", "split"),
    produces=(VERIFIED, "fp32.predictions.jsonl"),
    run=run,
)
