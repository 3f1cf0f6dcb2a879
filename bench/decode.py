"""Decode speed and label latency of every engine a user could serve the same student with, in one run.

    python bench/decode.py build/review-sentiment [--llama-cpp DIR] [--http] [--threads 2]

Engines, all on the same fine-tuned weights and the same thread count:
- PyTorch eager (transformers, fp32), label answers decoded over the label set as the package does;
- every variant the export stage wrote (the package's runtime, as shipped);
- llama.cpp f32 and q8_0 GGUFs, converted with llama.cpp's own `convert_hf_to_gguf.py` (`--llama-cpp`:
  the llama.cpp folder of llama-cpp-python's source distribution; needs llama-cpp-python and
  sentencepiece installed). Label answers: up to 4 greedy tokens, reusing the cache of the prompt
  prefix shared with the previous call, as llama-cpp-python does.

Columns: decode tokens/s (`--tokens` forced greedy tokens after a `--prompt-tokens` prompt: the rate of
the steps after the first, median of `--repeats` rounds in which the engines take turns); label p50/p95
ms (one input at a time, in process); agreement with the PyTorch fp32 student's answers. `--http` adds
the package's server answering the same inputs one at a time over HTTP. Timings on shared machines are
noisy: compare within one run. Kernels differ by instruction set, so the table says which CPU it was
measured on (its level and the flags onnxruntime dispatches on), and so does the JSON.

A build frees the trained weights and the variants it did not ship once the package is in place: measure
a build made with `distillc build SPEC --keep-weights`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_json, read_jsonl
from distillc.quality.latency import percentiles
from distillc.student.prompt import label_sequences, load_prompt, prompt_ids, prompt_text
from distillc.task.label import normalize_label
from distillc_runtime import cpu
from distillc_runtime.constrain import LabelTrie


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="a build folder (build/<name>) of a label task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inputs", type=int, default=60, help="label requests per engine")
    parser.add_argument("--llama-cpp", type=Path, help="llama.cpp source folder with convert_hf_to_gguf.py")
    parser.add_argument("--http", action="store_true", help="also time the package's server over HTTP")
    parser.add_argument("--out", type=Path, help="JSON results (default: BUILD/bench-decode.json)")
    args = parser.parse_args()

    artifacts = {s["name"]: args.build / s["artifact"] for s in read_json(args.build / "manifest.json")["stages"]}
    model_dir = artifacts["train"] / "model"
    if not (model_dir / "model.safetensors").exists():
        message = f"error: {args.build}'s trained weights were freed after it shipped; build with --keep-weights"
        print(message, file=sys.stderr)
        return 2
    prompt = load_prompt(model_dir)
    generation = read_json(args.build / "package" / "model" / "generation.json")
    labels = [x["text"] for x in generation.get("labels", [])]
    if not labels:
        print("error: bench/decode.py measures label tasks; this build's task has no labels", file=sys.stderr)
        return 2
    rows = read_jsonl(artifacts["split"] / "holdout.jsonl") + read_jsonl(artifacts["split"] / "train.jsonl")
    texts = [r["input"] for r in rows][: args.inputs]

    results: list[dict[str, Any]] = []
    engines = [("pytorch eager fp32", lambda: torch_engine(model_dir, labels, args.threads))]
    skipped: list[str] = []
    for variant in sorted((artifacts["export"] / "variants").iterdir(), key=lambda p: p.name != "fp32"):
        if not (variant / "model.onnx").exists():  # freed after the build (distillc.build.evict)
            skipped.append(f"package {variant.name} (freed after the build; build with --keep-weights)")
            continue
        if not (variant / "generation.json").exists():  # a linear student: it has no tokens to decode
            skipped.append(f"package {variant.name} (not a language model)")
            continue
        engines.append((f"package {variant.name}", lambda v=variant: package_engine(v, args.threads)))
    if args.llama_cpp:
        for outtype in ("f32", "q8_0"):
            engines.append((f"llama.cpp {outtype}", lambda t=outtype: llama_engine(model_dir, args, t, labels)))
    else:
        skipped.append("llama.cpp (no --llama-cpp)")

    loaded: list[tuple[str, dict[str, Callable]]] = []
    for name, make in engines:
        try:
            loaded.append((name, make()))
        except ImportError as error:
            skipped.append(f"{name} ({error})")
    # Decode rates: the engines take turns, one measurement each per round, so a slow spell of a shared
    # machine falls on every engine alike rather than on whichever was being measured.
    rates: dict[str, list[float]] = {name: [] for name, _ in loaded}
    prompts = {name: e["tokenize"](prompt_text(prompt, " ".join(texts)))[: args.prompt_tokens] for name, e in loaded}
    for _ in range(args.repeats):
        for name, engine in loaded:
            rates[name].append(decode_rate(engine["generate"], prompts[name], args.tokens))
    reference: list[str] = []
    for name, engine in loaded:
        answers, latencies = [], []
        engine["answer"](texts[0])  # warm-up
        for text in texts:
            started = time.perf_counter()
            answers.append(engine["answer"](text))
            latencies.append((time.perf_counter() - started) * 1000)
        reference = reference or answers
        results.append(row(name, statistics.median(rates[name]), latencies, answers, reference))
        results[-1]["decode_rounds"] = [round(r, 1) for r in rates[name]]  # each round's rate, to see the spread
        print_row(results[-1])
    if args.http:
        package = args.build / "package"
        answers, latencies = over_http(package, texts)
        results.append(row("package over HTTP", None, latencies, answers, reference))
        print_row(results[-1])

    print()
    machine = cpu.describe()
    print(f"CPU: {cpu.text(machine)}, {args.threads} threads")
    print(table(results))
    for line in skipped:
        print(f"skipped: {line}")
    out = args.out or args.build / "bench-decode.json"
    ratios = round_ratios(rates)
    for pair, values in ratios.items():
        print(f"{pair}, per round: " + ", ".join(f"{v:.2f}x" for v in values))
    summary = {"cpu": machine, "threads": args.threads, "inputs": len(texts), "engines": results}
    summary["round_ratios"] = ratios
    out.write_text(json.dumps(summary, indent=2))
    return 0


PAIRS = (("package int8", "llama.cpp q8_0"), ("package fp32", "llama.cpp f32"), ("package fp32", "pytorch eager fp32"))


def round_ratios(rates: dict[str, list[float]]) -> dict[str, list[float]]:
    """Decode rate ratios of engines measured in the same round: the rounds share the machine's slow
    spells, so their ratios vary less than the medians' ratio tells."""
    return {
        f"{a} / {b}": [round(x / y, 3) for x, y in zip(rates[a], rates[b], strict=True)]
        for a, b in PAIRS
        if rates.get(a) and rates.get(b)
    }


def row(name: str, rate: float | None, latencies: list[float], answers: list[str], reference: list[str]) -> dict:
    summary = percentiles(latencies)
    agreement = sum(a == b for a, b in zip(answers, reference, strict=True)) / len(answers)
    return {
        "engine": name,
        "decode_tokens_per_s": round(rate, 1) if rate else None,
        "label_p50_ms": summary["p50"],
        "label_p95_ms": summary["p95"],
        "agreement": round(agreement, 4),
        "outside_label_set": sum(a == "" for a in answers),
    }


def print_row(r: dict) -> None:
    print(f"{r['engine']}: {r['decode_tokens_per_s']} tok/s, label p50 {r['label_p50_ms']} ms", flush=True)


def table(results: list[dict]) -> str:
    lines = [
        "| engine | decode tok/s | label p50 ms | label p95 ms | agrees with PyTorch fp32 |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        rate = f"{r['decode_tokens_per_s']:.1f}" if r["decode_tokens_per_s"] else "-"
        lines.append(
            f"| {r['engine']} | {rate} | {r['label_p50_ms']:.1f} | {r['label_p95_ms']:.1f} | {r['agreement']:.1%} |"
        )
    return "\n".join(lines)


SETTLE_S = 1.0


def decode_rate(generate: Callable[[list[int], int], None], ids: list[int], tokens: int) -> float:
    """Tokens per second of the decoding steps alone: (tokens - 1) / (time for `tokens` - time for 1)."""
    # Let the previous engine's idle threads stop spinning (OpenMP, onnxruntime and llama.cpp pools all
    # spin-wait a while after work, and would take the 2 cores from whoever runs next), then warm up:
    # another engine's turn may have evicted this one's weights from the caches.
    time.sleep(SETTLE_S)
    generate(ids, 2)
    for _ in range(5):  # on a loaded machine the one-token run can take longer than the long one: again
        started = time.perf_counter()
        generate(ids, 1)
        one = time.perf_counter() - started
        started = time.perf_counter()
        generate(ids, tokens)
        decoding = time.perf_counter() - started - one
        if decoding > 0:
            return (tokens - 1) / decoding
    raise RuntimeError("decoding time was lost in noise five times: the machine is too busy to measure")


# -- engines: each is {"tokenize": text -> ids, "generate": (ids, n) -> None, "answer": text -> label} --


def torch_engine(model_dir: Path, labels: list[str], threads: int) -> dict[str, Callable]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillc.student.decode import classify

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sequences = label_sequences(tokenizer, labels)
    trie = LabelTrie(labels, [s["ids"] for s in sequences])
    prompt = load_prompt(model_dir)

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def generate(ids: list[int], n: int) -> None:
        inputs, cache = torch.tensor([ids]), None
        for _ in range(n):
            out = model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1)
            inputs, cache = out.logits[:, -1].argmax(-1, keepdim=True), out.cache

    @torch.inference_mode()
    def answer(text: str) -> str:
        return labels[classify(model, torch.tensor([prompt_ids(tokenizer, prompt, text)]), trie).label]

    return {"tokenize": tokenize, "generate": generate, "answer": answer}


def package_engine(variant: Path, threads: int) -> dict[str, Callable]:
    from distillc_runtime.generate import Generator

    generator = Generator(variant, threads=threads)

    def tokenize(text: str) -> list[int]:
        return generator.tokenizer.encode(text, add_special_tokens=False).ids

    def generate(ids: list[int], n: int) -> None:
        generator.generate_batch([ids], n, stop_at_eos=False)

    return {"tokenize": tokenize, "generate": generate, "answer": generator.predict}


def llama_engine(model_dir: Path, args: argparse.Namespace, outtype: str, labels: list[str]) -> dict[str, Callable]:
    import numpy as np
    from llama_cpp import Llama
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    gguf = args.build / f"bench-{outtype}.gguf"
    if not gguf.exists():
        convert = args.llama_cpp / "convert_hf_to_gguf.py"
        env = {**os.environ, "PYTHONPATH": str(args.llama_cpp / "gguf-py")}
        command = [sys.executable, str(convert), str(model_dir), "--outtype", outtype, "--outfile", str(gguf)]
        subprocess.run(command, env=env, check=True, capture_output=True)
    llm = Llama(str(gguf), n_threads=args.threads, n_threads_batch=args.threads, n_ctx=1024, verbose=False)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = load_prompt(model_dir)
    by_form = {normalize_label(label): label for label in labels}

    def tokenize(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    def generate(ids: list[int], n: int) -> None:
        llm.reset()
        llm.eval(ids)
        for _ in range(n - 1):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])

    def answer(text: str) -> str:
        out = llm.create_completion(prompt_ids(hf_tokenizer, prompt, text), max_tokens=4, temperature=0.0)
        return by_form.get(normalize_label(out["choices"][0]["text"]), "")

    return {"tokenize": tokenize, "generate": generate, "answer": answer}


def over_http(package: Path, texts: list[str]) -> tuple[list[str], list[float]]:
    """The package's own server, started as `distillc serve` starts it, answering one request at a time."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = str(package / "distillc_runtime" / "launch.py")  # as `distillc serve` and the image start it
    command = [sys.executable, "-I", launcher, "serve", str(package), "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(
                            "the package's server did not start: " + log.read().decode()[-2000:]
                        ) from None
                    time.sleep(0.2)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # kept alive, as clients do
            post(connection, texts[0])  # warm-up
            answers, latencies = [], []
            for text in texts:
                started = time.perf_counter()
                answers.append(post(connection, text))
                latencies.append((time.perf_counter() - started) * 1000)
            return answers, latencies
        finally:
            server.terminate()
            server.wait(timeout=30)


def post(connection: http.client.HTTPConnection, text: str) -> str:
    body = json.dumps({"input": text})
    connection.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
    return json.loads(connection.getresponse().read())["output"]


if __name__ == "__main__":
    sys.exit(main())
