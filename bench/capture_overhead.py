"""What `distillc capture` adds to a request's latency, against a local upstream, on this machine.

    python bench/capture_overhead.py [--requests 2000] [--rounds 3] [--out capture_overhead.json]

An instant OpenAI-compatible upstream (tests/fake_teacher.py) runs in a process of its own, and so does the
proxy (`distillc capture`, recording to a temporary folder). A client with keep-alive connections sends the
same chat requests straight to the upstream and through the proxy, at concurrency 1 and 16, rounds
alternating (direct, proxy, direct, ...) so that the machine's noise falls on both; each figure is the median
over rounds of a round's p50 or p95. Non-streamed and streamed answers. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*, run from anywhere

from tests.helpers import free_port  # noqa: E402

UPSTREAM = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.fake_teacher import FakeTeacher
with FakeTeacher(lambda text: "positive", record=False) as teacher:
    print(teacher.base_url, flush=True)
    time.sleep(3600)
"""


async def round_latencies(base: str, requests: int, concurrency: int, stream: bool) -> list[float]:
    import aiohttp

    body = {"model": "m", "messages": [{"role": "user", "content": "the kettle was lovely"}], "stream": stream}
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(n: int) -> None:
            for _ in range(n):
                started = time.perf_counter()
                async with session.post(f"{base}/chat/completions", json=body) as response:
                    await response.read()
                    assert response.status == 200
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = str(Path(__file__).resolve().parents[1])
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, root], stdout=subprocess.PIPE, text=True)
    assert upstream.stdout is not None
    direct = upstream.stdout.readline().strip()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        command = ["-m", "distillc", "capture", "--upstream", direct, "--listen", f"127.0.0.1:{port}", "--out", folder]
        proxy = subprocess.Popen([sys.executable, *command], stderr=subprocess.PIPE, text=True)
        assert proxy.stderr is not None
        proxy.stderr.readline()  # "capturing to ...": it listens
        through = f"http://127.0.0.1:{port}/v1"
        results = []
        try:
            for stream in (False, True):
                for concurrency in (1, 16):
                    asyncio.run(round_latencies(through, 200, concurrency, stream))  # warm both paths
                    asyncio.run(round_latencies(direct, 200, concurrency, stream))
                    figures: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
                    for _ in range(args.rounds):
                        for name, base in (("direct", direct), ("proxy", through)):
                            lat = asyncio.run(round_latencies(base, args.requests, concurrency, stream))
                            figures[name].append((percentile(lat, 0.5), percentile(lat, 0.95)))
                    row = {"stream": stream, "concurrency": concurrency}
                    for name, rounds in figures.items():
                        row[f"{name}_p50_ms"] = round(statistics.median(r[0] for r in rounds), 3)
                        row[f"{name}_p95_ms"] = round(statistics.median(r[1] for r in rounds), 3)
                    row["added_p50_ms"] = round(row["proxy_p50_ms"] - row["direct_p50_ms"], 3)
                    row["added_p95_ms"] = round(row["proxy_p95_ms"] - row["direct_p95_ms"], 3)
                    results.append(row)
                    print(json.dumps(row), flush=True)
            captured = sum(1 for p in Path(folder).glob("*.jsonl") for _ in p.open())
            print(f"records captured: {captured}", flush=True)
        finally:
            proxy.terminate()
            upstream.terminate()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
