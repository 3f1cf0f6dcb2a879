"""Labeling rate of the teacher pool against the HTTP test server, as a ratio to the limit C/L.

    python bench/labeling_rate.py [--concurrency 64] [--latency-ms 50] [--requests 8000] [--repeats 5]

The server (a process of its own, as an endpoint would be) answers every request after exactly L;
with C requests in flight no client can label faster than C/L per second. The pool runs as labeling
does (keep-alive connections, fsync'd journal), into a fresh journal each repeat; a sequential client
(C = 1) runs in the same process for comparison. Prints the median rate and its ratio to C/L and to
the sequential rate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distillc.build.events import null_sink  # noqa: E402
from distillc.spec.ir import (
    TaskIR,  # noqa: E402
    TeacherIR,  # noqa: E402
)
from distillc.teacher import client  # noqa: E402
from distillc.teacher.journal import Journal  # noqa: E402
from tests.fake_teacher import FakeTeacher  # noqa: E402

TASK = TaskIR("Classify.", (), "label", ("positive", "negative"), "")


def rate(teacher: TeacherIR, requests: int, tag: str) -> float:
    pending = [
        (f"{tag}-{i}", [{"role": "system", "content": "Classify."}, {"role": "user", "content": f"review {i}"}])
        for i in range(requests)
    ]
    with tempfile.TemporaryDirectory() as folder, Journal(Path(folder) / "teacher.sqlite") as journal:
        started = time.perf_counter()
        failures = client.connect(teacher, TASK, journal, null_sink, "label").complete(pending)
        elapsed = time.perf_counter() - started
        assert not failures and len(journal) == requests, failures
    return requests / elapsed


def serve(latency: float, conn: multiprocessing.connection.Connection) -> None:
    with FakeTeacher(answer, delay_s=latency, record=False) as server:
        conn.send(server.base_url)
        conn.recv()  # until the benchmark is done


def answer(text: str) -> str:
    return "positive"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--sequential-requests", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=serve, args=(latency, theirs), daemon=True)
    server.start()
    base_url = ours.recv()
    try:
        teacher = TeacherIR(
            provider="openai",
            model="bench",
            base_url=base_url,
            temperature=0.0,
            max_tokens=4,
            max_failed_share=0.0,
            max_concurrency=args.concurrency,
            requests_per_minute=0,
            tokens_per_minute=0,
            timeout_s=60.0,
            max_retries=0,
            api_key_env="UNUSED",
            price_input_per_1m=0.0,
            price_output_per_1m=0.0,
            batch=False,
            batch_poll_s=30.0,
        )
        pooled, sequential = [], []
        for repeat in range(args.repeats):
            pooled.append(rate(teacher, args.requests, f"pool{repeat}"))
            one = replace(teacher, max_concurrency=1)
            sequential.append(rate(one, args.sequential_requests, f"seq{repeat}"))
            print(f"repeat {repeat}: pool {pooled[-1]:.0f}/s, sequential {sequential[-1]:.1f}/s", flush=True)
    finally:
        ours.send("stop")
        server.join(timeout=10)
    limit = args.concurrency / latency
    pool, seq = statistics.median(pooled), statistics.median(sequential)
    print(
        f"C={args.concurrency} L={args.latency_ms:g} ms: pool {pool:.0f} req/s = {pool / limit:.3f} x C/L "
        f"({limit:.0f}/s); sequential {seq:.1f} req/s = {seq / (1 / latency):.3f} x 1/L; "
        f"pool/sequential {pool / seq:.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
