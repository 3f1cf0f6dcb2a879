"""Throughput of a built package's generator: one request at a time vs micro-batches.

    python bench/batching.py build/review-sentiment/package [--requests 64] [--batch 8]

Both ways run in the same process, back to back, on the same inputs; the ratio is what to compare
(absolute numbers on shared machines are noisy). Prints requests per second and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("package", type=Path)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from distillc_runtime.generate import Generator

    generator = Generator(args.package / "model")
    spec_inputs = Path(__file__).parent.parent / "specs" / "data" / "reviews.jsonl"
    texts = [json.loads(line)["text"] for line in spec_inputs.read_text().splitlines()]
    texts = (texts * (args.requests // len(texts) + 1))[: args.requests]
    generator.predict(texts[0])  # warm-up

    def one_by_one() -> list[str]:
        return [generator.predict(t) for t in texts]

    def batched() -> list[str]:
        out: list[str] = []
        for i in range(0, len(texts), args.batch):
            out += generator.predict_batch(texts[i : i + args.batch])
        return out

    rates = {}
    for name, run in (("one at a time", one_by_one), (f"batches of {args.batch}", batched)):
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - started)
        rates[name] = len(texts) / statistics.median(seconds)
        print(f"{name:>16}: {rates[name]:7.1f} requests/s (median of {args.repeats})")
    same = one_by_one() == batched()
    first, second = rates.values()
    print(f"speed-up: {second / first:.2f}x; identical answers: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
