"""Export the student to ONNX with an explicit key/value cache, then prove parity on held-out inputs.

Two graphs, one runtime loop (distillc_runtime.kvcache):
- CPU packages: the fused graph of onnxruntime-genai's model builder (fused_export.py), the faster one
  on CPUs by measurement;
- GPU packages, and architectures the builder does not know: `torch.onnx.export(dynamo=True)` of a thin
  wrapper whose inputs are input_ids, attention_mask, position_ids and past.<i>.key/value, and whose
  outputs are the last position's logits and present.<i>.key/value. Its standard ops run under CUDA and
  TensorRT and on the CPU that verifies the build (the builder's fp32 graph would run its attention on
  the CPU under CUDA, and its fp16 CUDA graph cannot be checked on a machine without a GPU).
The exported model must give the same answers, token for token, as the PyTorch student on every
held-out input.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_json, read_jsonl, write_json, write_jsonl
from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.quality.latency import percentiles
from distillc.stages.evaluate import candidate_predictions
from distillc.stages.prune import FULL, candidates
from distillc.student.fused_export import build_fused_onnx
from distillc.student.models import quiet_transformers
from distillc.student.prompt import answer_ids, load_prompt
from distillc.student.quantize import quantize
from distillc.task import task_type
from distillc.task.base import StudentTokens

EXPORTED = "exported.json"


def variant_dir(export_artifact: Path, variant: str) -> Path:
    return export_artifact / "variants" / variant


def variant_name(student: str, weights: str) -> str:
    """The full student's variants are named by their weights (fp32, int8); a pruned candidate's get its name
    in front (l15-int8)."""
    return weights if student == FULL else f"{student}-{weights}"


def run(ctx: StageContext, train: Path, evaluate: Path, prune: Path) -> dict[str, Any]:
    full = export_student(ctx, FULL, train / "model", evaluate / "predictions.jsonl")
    pruned = [
        export_student(ctx, c["name"], c["model"], candidate_predictions(evaluate, c["name"]))
        for c in candidates(prune)
    ]
    exported, sizes = [], {}
    for student in (full, *pruned):
        variant_bytes = student.pop("variant_bytes")
        sizes.update(variant_bytes)
        variants = [
            {"name": name, "weights": name.removeprefix(f"{student['name']}-"), "bytes": size}
            for name, size in variant_bytes.items()
        ]
        exported.append({"student": student["name"], "layers": student["layers"], "variants": variants})
    write_json(ctx.workdir / EXPORTED, {"students": exported})  # what verify measures
    return {**full, "variant_bytes": sizes, "candidates": pruned}


def exported_students(export_artifact: Path) -> list[dict[str, Any]]:
    """Each exported student, the full one first: name, layers, and its variants (name, weights, bytes), fp32
    first, then in the order of export.quantization."""
    return read_json(export_artifact / EXPORTED)["students"]


def export_student(ctx: StageContext, name: str, model_dir: Path, predictions: Path) -> dict[str, Any]:
    """Export one student (fp32, then each quantization), after proving the fp32 graph answers as PyTorch did."""
    out = variant_dir(ctx.workdir, variant_name(name, "fp32"))
    out.mkdir(parents=True)
    started = time.perf_counter()
    graph, layers = export_graph(ctx, model_dir, out / "model.onnx")
    export_seconds = time.perf_counter() - started
    shutil.copy2(model_dir / "tokenizer.json", out / "tokenizer.json")
    write_generation_config(model_dir, out, ctx.spec)
    ctx.log(f"{name}: exported {layers} layers ({graph} graph) in {export_seconds:.1f}s; checking parity")
    parity = check_parity(out, read_jsonl(predictions))
    write_jsonl(ctx.workdir / ("parity.jsonl" if name == FULL else f"parity-{name}.jsonl"), parity["rows"])
    mismatches = [r for r in parity["rows"] if not r["same"]]
    if mismatches:
        first = mismatches[0]
        raise DistillcError(
            "E310",
            f"the ONNX model's output differs from the PyTorch student ({name}) on {len(mismatches)} of "
            f"{len(parity['rows'])} held-out inputs (first: {first['input'][:80]!r}: "
            f"{first['torch']!r} vs {first['onnx']!r})",
        )
    sizes = {variant_name(name, "fp32"): onnx_bytes(out)}
    for weights in ctx.spec.export.quantization:
        if weights != "fp32":
            variant = variant_name(name, weights)
            target = variant_dir(ctx.workdir, variant)
            log = ctx.build_dir / "logs" / f"quantize-{variant}.log"
            failure = DistillcError(
                "E312",
                f"{weights} quantization failed",
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
        "export_seconds": round(export_seconds, 2),
        "parity_checked": len(parity["rows"]),
        "latency_ms": parity["latency_ms"],
        "variant_bytes": sizes,
    }


def export_graph(ctx: StageContext, model_dir: Path, target: Path) -> tuple[str, int]:
    """("fused" | "portable", decoder layers): the fused graph for CPU packages when the builder takes
    the architecture, the portable one otherwise."""
    logs = ctx.build_dir / "logs"
    if ctx.spec.export.target == "cpu":
        try:
            return "fused", build_fused_onnx(model_dir, target, logs / "export-builder.log")
        except DistillcError as error:
            ctx.log(f"the fused export did not take this model ({error.message}); using the portable export")
            for leftover in target.parent.glob(target.name + "*"):
                leftover.unlink()
    return "portable", export_onnx(model_dir, target, logs / "export.log")


def write_generation_config(model_dir: Path, out: Path, spec: Any) -> None:
    """generation.json: the prompt around each input, when to stop, and what the answer may be: the task
    type's decoding constraint (a label task's labels as the token sequences the student was trained on; a
    JSON task's schema)."""
    from transformers import AutoTokenizer

    config = {
        **load_prompt(model_dir),
        "max_new_tokens": spec.deploy.max_new_tokens,
        "output_type": spec.task.output_type,
    }
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab_size = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    tokens = StudentTokens(functools.partial(answer_ids, tokenizer), tokenizer.eos_token_id, vocab_size)
    config |= task_type(spec.task).constraint(spec.task, tokens)
    (out / "generation.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def onnx_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(("model.onnx", "prefill.onnx")))


def export_onnx(model_dir: Path, target: Path, log_path: Path | None = None) -> int:
    """Write `target` (and its external weights file); returns the number of decoder layers.

    The exporter's own progress lines and warnings go to `log_path`, not to the user's terminal.
    """
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    quiet_transformers()

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    config = model.config
    n_layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache(config=config)
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,  # only the last position's logits are ever read: skip the rest of the head
            )
            present = []
            for layer in out.cache.layers[:n_layers]:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    batch, seq, past_len = 2, 3, 4
    example = (
        torch.randint(0, config.vocab_size, (batch, seq)),
        torch.ones(batch, past_len + seq, dtype=torch.long),
        torch.arange(past_len, past_len + seq).repeat(batch, 1),
        *[torch.zeros(batch, kv_heads, past_len, head_dim) for _ in range(2 * n_layers)],
    )
    past_names = [f"past.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    b, s, p, t = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    dynamic = {
        "input_ids": {0: b, 1: s},
        "attention_mask": {0: b, 1: t},
        "position_ids": {0: b, 1: s},
        "past": tuple({0: b, 2: p} for _ in past_names),
    }
    failure = DistillcError(
        "E311",
        f"ONNX export of {config.model_type} failed",
        help=f"the exporter's log is in {log_path}" if log_path else None,
    )
    with torch.no_grad(), library_output(log_path, failure):
        torch.onnx.export(
            Decoder(),
            example,
            str(target),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *[n.replace("past.", "present.") for n in past_names]],
            verbose=False,
        )
    return n_layers


@contextlib.contextmanager
def library_output(log_path: Path | None, failure: DistillcError) -> Iterator[None]:
    """Send a library's prints, log records and warnings to `log_path` rather than the user's terminal,
    and turn whatever it raises into `failure`, with the first line of the cause appended."""
    log = io.StringIO()
    root, exporter = logging.getLogger(), logging.getLogger("torch.onnx")
    saved = root.handlers[:], root.level, exporter.level
    root.handlers = [logging.StreamHandler(log)]  # onnxruntime's quantizers log to the root logger
    root.setLevel(logging.WARNING)
    exporter.setLevel(logging.ERROR)  # torch logs through handlers of its own
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except Exception as exc:  # noqa: BLE001 - these libraries raise many types; the user needs one message
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise DistillcError(failure.code, f"{failure.message}: {cause}", help=failure.help) from None
    finally:
        root.handlers, level, exporter_level = saved
        root.setLevel(level)
        exporter.setLevel(exporter_level)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(log.getvalue(), encoding="utf-8")


def check_parity(model_dir: Path, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """The ONNX runtime's answers vs the PyTorch student's, token for token, with request latency.

    Both decode the same way (label-constrained for label tasks), so any difference is the export's."""
    from distillc_runtime.generate import Generator

    generator = Generator(model_dir)
    rows, latencies = [], []
    for p in predictions:
        started = time.perf_counter()
        ids = generator.answer_ids(generator.prompt_ids(p["input"]))
        latencies.append((time.perf_counter() - started) * 1000)
        rows.append(
            {"id": p["id"], "input": p["input"], "torch": p["output_ids"], "onnx": ids, "same": ids == p["output_ids"]}
        )
    return {"rows": rows, "latency_ms": percentiles(latencies)}


STAGE = Stage(
    name="export",
    version=6,  # 6: every pruned candidate is exported too
    reads=(
        "task.output_type",
        "task.labels",
        "task.json_schema",
        "deploy.max_new_tokens",
        "export.quantization",
        "export.target",
    ),
    needs=("train", "evaluate", "prune"),
    produces=(EXPORTED, "parity.jsonl", "variants/fp32/model.onnx", "variants/*/generation.json"),
    run=run,
)
