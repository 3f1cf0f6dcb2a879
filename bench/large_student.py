"""Real student sizes on this machine: export, quantization and training memory and time.

A random-weight model of Qwen2.5-0.5B's or 1.5B's published shape (no model hub is reached) with SmolLM2's
tokenizer goes through the export stage's own steps, each in a fresh process whose peak RSS (its own and its
children's, the model builder's included) is measured:

    python bench/large_student.py export --size 0.5b --dir /tmp/large
    python bench/large_student.py train --size 0.5b --dir /tmp/large --method lora --steps 3

Prints one JSON line per step, with the CPU flags. Needs ~5x the fp32 model's size in free disk.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*, run from anywhere

from tests.peak_memory import run_with_peak  # noqa: E402

# Qwen2.5's published configs (config.json of Qwen/Qwen2.5-0.5B-Instruct and -1.5B-Instruct).
SHAPES = {
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12},
}
COMMON = {
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


def cpu_flags() -> list[str]:
    import re

    text = Path("/proc/cpuinfo").read_text()
    return sorted(set(re.findall(r"\b(avx2|avx512[a-z_0-9]*|avx_vnni|amx[a-z_]*)\b", text)))


def make_model(size: str, folder: Path) -> Path:
    """The random student in folder/hf (made once)."""
    target = folder / "hf"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from distillc.student.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = Qwen2Config(**SHAPES[size], **COMMON, **ids)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    AutoTokenizer.from_pretrained(target)  # loads as saved
    return target


def measured(step: str, code: str) -> dict[str, object]:
    """Run `code` in a fresh Python process; its seconds and the peak RSS of it and its children."""
    done, seconds, peak_mb = run_with_peak([sys.executable, "-c", code], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    result = {"step": step, "seconds": round(seconds, 1), "peak_rss_gib": round(peak_mb / 1024, 2)}
    if lines:
        result["output"] = lines[-1][:300]
    if done.returncode != 0:
        result["error"] = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
    print(json.dumps(result), flush=True)
    return result


def export(size: str, folder: Path) -> None:
    hf = make_model(size, folder)
    fp32 = folder / "fp32"
    fp32.mkdir(exist_ok=True)
    measured(
        "fused export (builder + graph edits)",
        "from pathlib import Path; from distillc.student.fused_export import build_fused_onnx; "
        f"build_fused_onnx(Path({str(hf)!r}), Path({str(fp32 / 'model.onnx')!r}), "
        f"Path({str(folder / 'builder.log')!r}))",
    )
    import shutil

    shutil.copy2(hf / "tokenizer.json", fp32 / "tokenizer.json")
    (fp32 / "generation.json").write_text("{}")
    sizes = {"fp32": sum(p.stat().st_size for p in fp32.glob("*.onnx*"))}
    for variant in ("int8", "int4"):
        target = folder / variant
        shutil.rmtree(target, ignore_errors=True)
        measured(
            f"{variant} quantization",
            "from pathlib import Path; from distillc.student.quantize import quantize; "
            f"quantize(Path({str(fp32)!r}), Path({str(target)!r}), {variant!r})",
        )
        sizes[variant] = sum(p.stat().st_size for p in target.glob("*.onnx*"))
    measured(
        "load and answer (int8)",
        "import numpy as np, onnxruntime as ort; from distillc_runtime.kvcache import Layout, SharedCache; "
        f"s = ort.InferenceSession({str(folder / 'int8' / 'model.onnx')!r}); "
        f"p = ort.InferenceSession({str(folder / 'int8' / 'prefill.onnx')!r}); "
        "c = SharedCache(Layout(s, p), {}, []); c.start([list(range(100, 164))], 8); c.advance([5])",
    )
    print(json.dumps({"size": size, "mb": {k: round(v / 1e6) for k, v in sizes.items()}, "cpu": cpu_flags()}))


def train(size: str, folder: Path, method: str, steps: int, checkpointing: bool) -> None:
    hf = make_model(size, folder)
    code = f"""
import time, torch
from transformers import AutoModelForCausalLM
from distillc.spec.ir import LoraIR
from distillc.student.trainable import add_lora
model = AutoModelForCausalLM.from_pretrained({str(hf)!r}, dtype=torch.float32)
if {checkpointing!r}:
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
if {method!r} == "lora":
    model = add_lora(model, LoraIR(r=16, alpha=32, dropout=0.05, target_modules=()))
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(params, lr=1e-5)
ids = torch.randint(0, 49152, (8, 128))
model.train()
times = []
for step in range({steps}):
    started = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    times.append(time.perf_counter() - started)
print("step seconds", [round(t, 1) for t in times], "trainable", sum(p.numel() for p in params))
"""
    label = f"train {method}{' + checkpointing' if checkpointing else ''}, batch 8 x 128 tokens, {steps} steps"
    measured(label, code)
    print(json.dumps({"size": size, "cpu": cpu_flags()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["export", "train"])
    parser.add_argument("--size", choices=sorted(SHAPES), default="0.5b")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args()
    folder = args.dir / args.size
    folder.mkdir(parents=True, exist_ok=True)
    if args.what == "export":
        export(args.size, folder)
    else:
        train(args.size, folder, args.method, args.steps, args.checkpointing)


if __name__ == "__main__":
    main()
