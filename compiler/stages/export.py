"""Export the student to ONNX with an explicit key/value cache, then prove parity on held-out inputs.

`torch.onnx.export(dynamo=True)` of a thin wrapper whose inputs are input_ids, attention_mask,
position_ids and past.<i>.key/value, and whose outputs are logits and present.<i>.key/value.
The exported model must give the same greedy tokens as the PyTorch student on every held-out input.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillc.artifacts import read_jsonl, write_jsonl
from distillc.errors import DistillcError
from distillc.latency import percentiles
from distillc.models import quiet_transformers
from distillc.runner import StageContext
from distillc.student import load_prompt

NAME = "export"
VERSION = 2
READS = ("deploy.max_new_tokens", "export.quantization")
NEEDS = ("train", "evaluate")


def variant_dir(export_artifact: Path, variant: str) -> Path:
    return export_artifact / "variants" / variant


def run(ctx: StageContext, train: Path, evaluate: Path) -> dict[str, Any]:
    out = variant_dir(ctx.workdir, "fp32")
    out.mkdir(parents=True)
    started = time.perf_counter()
    layers = export_onnx(train / "model", out / "model.onnx", ctx.build_dir / "logs" / "export.log")
    export_seconds = time.perf_counter() - started
    shutil.copy2(train / "model" / "tokenizer.json", out / "tokenizer.json")
    prompt = load_prompt(train / "model")
    (out / "generation.json").write_text(
        json.dumps({**prompt, "max_new_tokens": ctx.spec.deploy.max_new_tokens}, indent=2), encoding="utf-8"
    )
    ctx.log(f"exported {layers} layers in {export_seconds:.1f}s; checking parity")
    parity = check_parity(out, read_jsonl(evaluate / "predictions.jsonl"))
    write_jsonl(ctx.workdir / "parity.jsonl", parity["rows"])
    mismatches = [r for r in parity["rows"] if not r["same"]]
    if mismatches:
        first = mismatches[0]
        raise DistillcError(
            "E310",
            f"the ONNX model's output differs from the PyTorch student on {len(mismatches)} of "
            f"{len(parity['rows'])} held-out inputs (first: {first['input'][:80]!r}: "
            f"{first['torch']!r} vs {first['onnx']!r})",
        )
    sizes = {"fp32": _size(out)}
    for variant in ctx.spec.export.quantization:
        if variant != "fp32":
            target = variant_dir(ctx.workdir, variant)
            quantize(out, target, variant, ctx.build_dir / "logs" / f"quantize-{variant}.log")
            sizes[variant] = _size(target)
            ctx.log(f"{variant}: {sizes[variant] / 1e6:.0f} MB (fp32: {sizes['fp32'] / 1e6:.0f} MB)")
    return {
        "layers": layers,
        "export_seconds": round(export_seconds, 2),
        "parity_checked": len(parity["rows"]),
        "parity_mismatches": 0,
        "latency_ms": parity["latency_ms"],
        "variant_bytes": sizes,
    }


def quantize(source: Path, target: Path, variant: str, log_path: Path) -> None:
    """Weight-only quantization of the fp32 export: int8 (dynamic, per MatMul) or int4 (blockwise MatMulNBits).

    Quantized variants are not expected to match fp32 token for token; the verify stage scores them as shipped.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    target.mkdir(parents=True)
    for name in ("tokenizer.json", "generation.json"):
        shutil.copy2(source / name, target / name)
    failure = DistillcError(
        "E312",
        f"{variant} quantization failed",
        help=f"remove {variant} from export.quantization; the quantizer's log is in {log_path}",
    )
    with library_output(log_path, failure):
        if variant == "int8":
            quantize_dynamic(
                str(source / "model.onnx"),
                str(target / "model.onnx"),
                weight_type=QuantType.QInt8,
                use_external_data_format=True,
            )
        else:
            quantizer = MatMulNBitsQuantizer(onnx.load(str(source / "model.onnx")), block_size=32, is_symmetric=True)
            quantizer.process()
            quantizer.model.save_model_to_file(str(target / "model.onnx"), use_external_data_format=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))


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
    """Greedy ONNX outputs vs the PyTorch student's, token for token, with request latency."""
    from distillc_runtime.generate import Generator

    generator = Generator(model_dir)
    rows, latencies = [], []
    for p in predictions:
        started = time.perf_counter()
        ids = generator.generate_ids(generator.prompt_ids(p["input"]))
        latencies.append((time.perf_counter() - started) * 1000)
        rows.append(
            {"id": p["id"], "input": p["input"], "torch": p["output_ids"], "onnx": ids, "same": ids == p["output_ids"]}
        )
    return {"rows": rows, "latency_ms": percentiles(latencies)}
