"""Export each student to ONNX with an explicit key/value cache, then prove parity on held-out inputs.

Two graphs, one runtime loop (distillc_runtime.kvcache), the target's as its row says (distillc.targets):
- "fused": onnxruntime-genai's model builder (distillc.student.fused_export), the faster graph on CPUs by
  measurement, or the portable one when the builder does not take the architecture;
- "portable": `torch.onnx.export(dynamo=True)` of a thin wrapper (distillc.student.onnx_export), whose
  standard ops run under CUDA and TensorRT and on the CPU that verifies the build.
The exported model must give the same answers, token for token, as the PyTorch student on every
held-out input.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from distillc.artifacts import linear as linear_student
from distillc.artifacts.evaluate import candidate_predictions, predictions_path
from distillc.artifacts.export import EXPORTED, ExportedStudent, Variant, variant_dir, variant_name, write_exported
from distillc.artifacts.prune import FULL, read_candidates
from distillc.build.artifacts import link_tree, read_jsonl, write_jsonl
from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.student.fused_export import build_fused_onnx, model_type
from distillc.student.onnx_export import check_parity, export_onnx, library_output, onnx_bytes, write_generation_config
from distillc.student.parameters import parameter_count
from distillc.student.quantize import quantize
from distillc.targets import TARGETS


def run(ctx: StageContext, train: Path, evaluate: Path, prune: Path, linear: Path) -> dict[str, Any]:
    full = export_student(ctx, FULL, train / "model", predictions_path(evaluate))
    pruned = [
        export_student(ctx, c["name"], c["model"], candidate_predictions(evaluate, c["name"]))
        for c in read_candidates(prune)
    ]
    exported: list[ExportedStudent] = []
    sizes: dict[str, int] = {}
    for student in (full, *pruned):
        variant_bytes = student.pop("variant_bytes")
        sizes.update(variant_bytes)
        variants = [
            Variant(name=name, weights=name.removeprefix(f"{student['name']}-"), bytes=size)
            for name, size in variant_bytes.items()
        ]
        exported.append(
            ExportedStudent(
                student=student["name"],
                kind="decoder",
                layers=student["layers"],
                parameters=student["parameters"],
                variants=variants,
            )
        )
    if made := linear_student.read_linear(linear):
        # Built, converted and checked against scikit-learn by the linear stage: listed here as it is.
        name = made["name"]
        link_tree(linear_student.model_dir(linear), variant_dir(ctx.workdir, name))
        sizes[name] = onnx_bytes(variant_dir(ctx.workdir, name))
        variant = Variant(name=name, weights="linear", bytes=sizes[name])
        exported.append(
            ExportedStudent(student=name, kind="linear", layers=0, parameters=made["parameters"], variants=[variant])
        )
    write_exported(ctx.workdir, exported)  # what verify measures
    return {**full, "variant_bytes": sizes, "candidates": pruned}


def export_student(ctx: StageContext, name: str, model_dir: Path, predictions: Path) -> dict[str, Any]:
    """Export one student (fp32, then each quantization), after proving the fp32 graph answers as PyTorch did.

    The target's graph first (distillc.targets); when the fused graph cannot be built, does not run, or
    answers otherwise than PyTorch, the failure is a warning with its code and the portable graph is tried.
    """
    out = variant_dir(ctx.workdir, variant_name(name, "fp32"))
    graphs = ("fused", "portable") if TARGETS[ctx.spec.export.target].export_graph == "fused" else ("portable",)
    for graph in graphs:
        try:
            layers, export_seconds, parity = export_checked(ctx, graph, name, model_dir, out, predictions)
            break
        except DistillcError as error:
            if graph == graphs[-1]:
                raise
            ctx.emit(Event("warning", ctx.stage, f"{error.code}: {error.message}; using the portable export"))
            shutil.rmtree(out)
    family = model_type(model_dir)
    sizes = {variant_name(name, "fp32"): onnx_bytes(out)}
    for weights in ctx.spec.export.quantization:
        if weights != "fp32":
            variant = variant_name(name, weights)
            target = variant_dir(ctx.workdir, variant)
            log = ctx.build_dir / "logs" / f"quantize-{variant}.log"
            failure = DistillcError(
                "E312",
                f"{weights} quantization of the {family} student ({graph} graph) failed",
                help=f"remove {weights} from export.quantization; the quantizer's log is in {log}",
            )
            with library_output(log, failure):
                quantize(out, target, weights)
            sizes[variant] = onnx_bytes(target)
            fp32 = sizes[variant_name(name, "fp32")]
            ctx.log(f"{variant}: {sizes[variant] / 1e6:.0f} MB (fp32: {fp32 / 1e6:.0f} MB)")
    return {
        "name": name,
        "graph": graph,
        "layers": layers,
        "parameters": parameter_count(model_dir),
        "export_seconds": round(export_seconds, 2),
        "parity_checked": len(parity["rows"]),
        "latency_ms": parity["latency_ms"],
        "variant_bytes": sizes,
    }


def export_checked(
    ctx: StageContext, graph: str, name: str, model_dir: Path, out: Path, predictions: Path
) -> tuple[int, float, dict[str, Any]]:
    """Write `graph` ("fused" | "portable") of the student in `model_dir` into `out`, and prove it answers
    each held-out input as PyTorch did: (decoder layers, export seconds, the parity check)."""
    out.mkdir(parents=True)
    logs, family = ctx.build_dir / "logs", model_type(model_dir)
    started = time.perf_counter()
    if graph == "fused":
        with library_output(None, DistillcError("E311", f"the fused export of the {family} student failed")):
            layers = build_fused_onnx(model_dir, out / "model.onnx", logs / "export-builder.log")
    else:
        layers = export_onnx(model_dir, out / "model.onnx", logs / "export.log")
    export_seconds = time.perf_counter() - started
    shutil.copy2(model_dir / "tokenizer.json", out / "tokenizer.json")
    write_generation_config(model_dir, out, ctx.spec)
    ctx.log(f"{name}: exported {layers} layers of {family} ({graph} graph) in {export_seconds:.1f}s; checking parity")
    failure = DistillcError("E311", f"the {graph} ONNX graph of the {family} student does not run")
    with library_output(logs / f"parity-{graph}.log", failure):
        parity = check_parity(out, read_jsonl(predictions))
    write_jsonl(ctx.workdir / ("parity.jsonl" if name == FULL else f"parity-{name}.jsonl"), parity["rows"])
    mismatches = [r for r in parity["rows"] if not r["same"]]
    if mismatches:
        first = mismatches[0]
        raise DistillcError(
            "E310",
            f"the {graph} ONNX graph of the {family} student ({name}) answers otherwise than PyTorch on "
            f"{len(mismatches)} of {len(parity['rows'])} held-out inputs (first: {first['input'][:80]!r}: "
            f"{first['torch']!r} vs {first['onnx']!r})",
        )
    return layers, export_seconds, parity


STAGE = Stage(
    name="export",
    version=7,  # 7: the linear student is listed too, and each student's parameters; 6: pruned candidates
    reads=(
        "task.output_type",
        "task.labels",
        "task.json_schema",
        "deploy.max_new_tokens",
        "export.quantization",
        "export.target",
    ),
    needs=("train", "evaluate", "prune", "linear"),
    produces=(EXPORTED, "parity.jsonl", "variants/fp32/model.onnx", "variants/*/generation.json"),
    run=run,
)
