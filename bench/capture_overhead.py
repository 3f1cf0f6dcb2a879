"""What `distillc capture` adds to a request's latency, against a local upstream, on this machine.

    python bench/capture_overhead.py [--requests 2000] [--rounds 3] [--client lean|aiohttp] [--out F]

An instant OpenAI-compatible upstream (tests/fake_teacher.py) runs in a process of its own, and so does the
proxy (`distillc capture`, recording to a temporary folder). A client with keep-alive connections sends the
same chat requests straight to the upstream and through the proxy, at concurrency 1 and 16, rounds
alternating (direct, proxy, direct, ...) so that the machine's noise falls on both; each figure is the median
over rounds of a round's p50 or p95. Non-streamed and streamed answers. Nothing leaves 127.0.0.1.

Client, upstream and proxy share this machine's cores, so what the client itself costs is CPU the proxy
competes for, and shows as latency the proxy adds: `--client lean` (the default) is an HTTP/1.1 client on
httptools that costs little per request, `--client aiohttp` a general-purpose one that costs several times
more (on 2 cores, at 16 in flight, that contention is most of the difference it shows).
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
from urllib.parse import urlsplit

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


async def round_latencies(
    base: str, requests: int, concurrency: int, stream: bool, client: str = "lean"
) -> list[float]:
    """Each request's seconds, `concurrency` clients on kept-alive connections sending `requests` in all."""
    if client == "lean":
        return await lean_latencies(base, requests, concurrency, stream)
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


class LeanClient(asyncio.Protocol):
    """One kept-alive connection sending one request at a time, its answer parsed by httptools (chunked
    bodies included) and dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import httptools

        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.answered: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(ConnectionError("closed"))

    def on_message_complete(self) -> None:
        assert self.answered is not None
        self.answered.set_result(self.parser.get_status_code())

    async def send(self, request: bytes) -> int:
        assert self.transport is not None
        self.answered = self.loop.create_future()
        self.transport.write(request)
        return await self.answered


async def lean_latencies(base: str, requests: int, concurrency: int, stream: bool) -> list[float]:
    url = urlsplit(base)
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "the kettle was lovely"}], "stream": stream}
    ).encode()
    head = f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
    request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    loop = asyncio.get_running_loop()
    latencies: list[float] = []

    async def worker(n: int) -> None:
        transport, client = await loop.create_connection(lambda: LeanClient(loop), url.hostname, url.port)
        for _ in range(n):
            started = time.perf_counter()
            assert await client.send(request) == 200
            latencies.append((time.perf_counter() - started) * 1000)
        transport.close()

    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--client", choices=("lean", "aiohttp"), default="lean")
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
                    asyncio.run(round_latencies(through, 200, concurrency, stream, args.client))  # warm both
                    asyncio.run(round_latencies(direct, 200, concurrency, stream, args.client))
                    figures: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
                    for _ in range(args.rounds):
                        for name, base in (("direct", direct), ("proxy", through)):
                            lat = asyncio.run(round_latencies(base, args.requests, concurrency, stream, args.client))
                            figures[name].append((percentile(lat, 0.5), percentile(lat, 0.95)))
                    row = {"client": args.client, "stream": stream, "concurrency": concurrency}
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
