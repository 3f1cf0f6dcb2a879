"""Every exported variant's answers on each x86-64 level: agreement with fp32 and latency, natively and
under QEMU's user-mode emulator.

    python bench/cpu_levels.py build/review-sentiment [--levels native,Haswell,Nehalem] [--variants DIR ...]

For each variant of the build's export stage (build with `--keep-weights`, or the unshipped ones are
freed), and each extra model folder given with `--variants`, the held-out inputs are answered one at a
time by the package's runtime, in a fresh process per level: `native` on this machine, the others under
`qemu-x86_64 -cpu LEVEL` (Haswell: AVX2 and FMA, no AVX-512, no VNNI; Nehalem: SSE4.2 only). Agreement
is with the fp32 variant's answers on this machine. Emulated latency is QEMU's, not a CPU's: only the
native column is a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from distillc_runtime import cpu


def answer(model: str, texts: list[str]) -> dict:
    """Runs in the measured process: each input answered alone, with its latency."""
    from distillc_runtime.generate import Generator

    generator = Generator(model)
    generator.predict(texts[0])  # warm-up
    answers, latencies = [], []
    for text in texts:
        started = time.perf_counter()
        answers.append(generator.predict(text))
        latencies.append((time.perf_counter() - started) * 1000)
    return {"answers": answers, "p50_ms": round(statistics.median(latencies), 2)}


def run_level(level: str, model: Path, texts: list[str]) -> dict:
    command = [sys.executable, __file__, "--answer", str(model)]
    if level != "native":
        command = ["qemu-x86_64", "-cpu", level, *command]
    done = subprocess.run(command, input=json.dumps(texts), capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, nargs="?")
    parser.add_argument("--levels", default="native,Haswell,Nehalem")
    parser.add_argument("--variants", type=Path, nargs="*", default=[], help="more model folders to measure")
    parser.add_argument("--inputs", type=int, default=19, help="held-out inputs to answer")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--answer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.answer:
        print(json.dumps(answer(args.answer, json.loads(sys.stdin.read()))))
        return 0

    manifest = json.loads((args.build / "manifest.json").read_text())
    stages = {s["name"]: args.build / s["artifact"] for s in manifest["stages"]}
    rows = [json.loads(line) for line in (stages["split"] / "holdout.jsonl").read_text().splitlines()]
    texts = [r["input"] for r in rows][: args.inputs]
    folders = sorted((stages["export"] / "variants").iterdir(), key=lambda p: p.name != "fp32")
    models = {p.name: p for p in folders if (p / "model.onnx").exists()} | {p.name: p for p in args.variants}
    levels = args.levels.split(",")
    results = {name: {level: run_level(level, model, texts) for level in levels} for name, model in models.items()}
    reference = results["fp32"]["native"]["answers"]

    print(f"host CPU: {cpu.text()}; {len(texts)} held-out inputs; agreement with native fp32")
    print(f"{'variant':16}" + "".join(f"{level:>22}" for level in levels))
    for name, by_level in results.items():
        cells = []
        for level in levels:
            got = by_level[level]
            if "error" in got:
                cells.append(f"{'error':>22}")
                continue
            agree = sum(a == b for a, b in zip(got["answers"], reference, strict=True)) / len(texts)
            got["agreement"] = round(agree, 4)
            cells.append(f"{agree:>10.1%} {got['p50_ms']:>8.1f} ms")
        print(f"{name:16}" + "".join(cells))
    if args.out:
        args.out.write_text(json.dumps({"host_cpu": cpu.describe(), "texts": texts, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
