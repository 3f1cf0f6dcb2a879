"""The package's server under load, over HTTP on 127.0.0.1: throughput and latency with micro-batching and
without, and an overload run at twice the measured capacity.

    python bench/serve_load.py build/review-sentiment/package [--requests 96] [--overload-s 15] [--inputs F] [--out F]

For each mode (micro-batches of the package's deploy.max_batch_size, then batches of 1) the server is
started as `distillc serve` starts it, and closed-loop clients at concurrency 1, 4 and
16 send `--requests` requests each (at most `--level-s` seconds a level). The overload run then sends
requests open-loop at twice the best requests/s measured, for `--overload-s` seconds: the queue must
turn the excess away with 429 at once, no answered request may take longer than the package's
request_timeout_s, and the server's resident memory must stay flat. Bounded in requests and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distillc_runtime import cpu

ROOT = Path(__file__).parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


def texts(path: Path) -> list[str]:
    """Inputs to send: a JSONL file's "input" or "text" fields."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row.get("input", row.get("text")) for row in rows]


class Server:
    """The package's server in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, package: Path, max_batch_size: int, max_queue: int | None = None) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        launcher = str(package / "distillc_runtime" / "launch.py")  # as `distillc serve` and the image start it
        command = [sys.executable, "-I", launcher, "serve", str(package), "--port", str(self.port)]
        command += ["--max-batch-size", str(max_batch_size)]
        if max_queue:
            command += ["--max-queue", str(max_queue)]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("the server did not start: " + self.log.read().decode()[-2000:])
            time.sleep(0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def post(connection: http.client.HTTPConnection, text: str) -> tuple[int, float, str | None]:
    """(status, seconds, Retry-After) of one /v1/predict request."""
    body = json.dumps({"input": text})
    started = time.perf_counter()
    connection.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status, time.perf_counter() - started, response.getheader("retry-after")


def closed_loop(port: int, inputs: list[str], concurrency: int, requests: int, limit_s: float) -> dict:
    """`concurrency` clients, each sending its next request when the last is answered."""
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    sent = iter(range(requests))
    deadline = time.monotonic() + limit_s

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for i in sent:
            if time.monotonic() > deadline:
                break
            outcome = post(connection, inputs[i % len(inputs)])
            with lock:
                results.append(outcome)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ok = [seconds * 1000 for status, seconds, _ in results if status == 200]
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "ok": len(ok),
        "by_status": statuses,
        "requests_per_s": round(len(ok) / elapsed, 1),
        "p50_ms": percentile(ok, 0.5),
        "p95_ms": percentile(ok, 0.95),
    }


def overload(server: Server, inputs: list[str], rate: float, seconds: float, timeout_s: float) -> dict:
    """Requests at `rate` per second whatever the answers, each on its own connection, as independent
    users arrive; memory sampled throughout."""
    count = int(rate * seconds)
    outcomes: list[tuple[int, float, str | None]] = []
    memory: list[float] = [server.rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            memory.append(server.rss_mb())

    def one(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s + 30)
        try:
            outcomes.append(post(connection, inputs[i % len(inputs)]))
        except OSError:
            outcomes.append((0, timeout_s + 30, None))
        finally:
            connection.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=256) as pool:
        for i in range(count):
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
            pool.submit(one, i)
    done.set()
    sampler.join()
    by_status: dict[str, int] = {}
    for status, _, _ in outcomes:
        by_status[str(status)] = by_status.get(str(status), 0) + 1
    answered = [s * 1000 for status, s, _ in outcomes if status == 200]
    refused = [s * 1000 for status, s, _ in outcomes if status == 429]
    return {
        "rate_per_s": round(rate, 1),
        "requests": len(outcomes),
        "by_status": by_status,
        "answered_p95_ms": percentile(answered, 0.95),
        "answered_max_ms": round(max(answered, default=0.0), 1),
        "refused_p95_ms": percentile(refused, 0.95),
        "retry_after_on_every_429": all(r is not None for status, _, r in outcomes if status == 429),
        "deadline_ms": timeout_s * 1000,
        "rss_mb": {"start": round(memory[0], 1), "max": round(max(memory), 1), "end": round(memory[-1], 1)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--level-s", type=float, default=60.0, help="at most this long per level")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--overload-s", type=float, default=15.0)
    parser.add_argument("--max-queue", type=int, help="serve with this deploy.max_queue instead of the package's")
    parser.add_argument("--inputs", type=Path, default=ROOT / "specs" / "data" / "reviews.jsonl")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    info = json.loads((args.package / "package.json").read_text(encoding="utf-8"))
    batch = int(info["deploy"].get("max_batch_size", 1))
    timeout_s = float(info["deploy"].get("request_timeout_s", 30.0))
    inputs = texts(args.inputs)
    levels = [int(c) for c in args.concurrency.split(",")]

    rows = []
    result: dict = {"package": str(args.package), "max_batch_size": batch, "levels": rows}
    for mode, size in (("micro-batching", batch), ("no batching", 1)):
        server = Server(args.package, size, args.max_queue)
        try:
            closed_loop(server.port, inputs, 2, 8, args.level_s)  # warm-up
            for level in levels:
                row = {"mode": mode, **closed_loop(server.port, inputs, level, args.requests, args.level_s)}
                rows.append(row)
                print(f"{mode:15s} c={level:<3d} {row['requests_per_s']:6.1f} req/s  "
                      f"p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms", flush=True)  # fmt: skip
            if mode == "micro-batching":
                capacity = max(r["requests_per_s"] for r in rows)
                result["overload"] = overload(server, inputs, 2 * capacity, args.overload_s, timeout_s)
                print(f"overload at {2 * capacity:.1f} req/s: {json.dumps(result['overload'])}", flush=True)
        finally:
            server.close()

    print()
    machine = cpu.describe()
    result["cpu"] = machine
    print(f"CPU: {cpu.text(machine)}")
    print("| mode | concurrency | requests/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['concurrency']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
