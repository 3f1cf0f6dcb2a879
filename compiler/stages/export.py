"""Export the student to ONNX with an explicit key/value cache, then prove parity on held-out inputs.

`torch.onnx.export(dynamo=True)` of a thin wrapper whose inputs are input_ids, attention_mask,
position_ids and past.<i>.key/value, and whose outputs are logits and present.<i>.key/value.
The exported model must give the same greedy tokens as the PyTorch student on every held-out input.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from distillc.artifacts import read_jsonl, write_jsonl
from distillc.errors import DistillcError
from distillc.runner import StageContext
from distillc.student import load_prompt

NAME = "export"
VERSION = 1
READS = ("deploy.max_new_tokens",)
NEEDS = ("train", "evaluate")


def run(ctx: StageContext, train: Path, evaluate: Path) -> dict[str, Any]:
    out = ctx.workdir / "model"
    out.mkdir()
    started = time.perf_counter()
    layers = export_onnx(train / "model", out / "model.onnx")
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
    return {
        "layers": layers,
        "export_seconds": round(export_seconds, 2),
        "parity_checked": len(parity["rows"]),
        "parity_mismatches": 0,
        "latency_ms": parity["latency_ms"],
        "onnx_bytes": sum(p.stat().st_size for p in out.iterdir()),
    }


def export_onnx(model_dir: Path, target: Path) -> int:
    """Write `target` (plus external data when large); returns the number of decoder layers."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

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
    with torch.no_grad():
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
    return {"rows": rows, "latency_ms": _percentiles(latencies)}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"p50": round(statistics.median(ordered), 2), "p95": round(pick(0.95), 2), "n": len(ordered)}
