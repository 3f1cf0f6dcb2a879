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
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillc.artifacts import read_jsonl, write_jsonl
from distillc.errors import DistillcError
from distillc.models import quiet_transformers
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
    return {
        "layers": layers,
        "export_seconds": round(export_seconds, 2),
        "parity_checked": len(parity["rows"]),
        "parity_mismatches": 0,
        "latency_ms": parity["latency_ms"],
        "onnx_bytes": sum(p.stat().st_size for p in out.iterdir()),
    }


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
    log = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(log), _quiet_exporter_logs():
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
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one message
        raise DistillcError(
            "E311",
            f"ONNX export of {config.model_type} failed: {str(exc).strip().splitlines()[0][:300]}",
            help=f"the exporter's log is in {log_path}" if log_path else None,
        ) from None
    finally:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(log.getvalue(), encoding="utf-8")
    return n_layers


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


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
