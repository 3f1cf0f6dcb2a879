"""The package's server against clients that hold connections without finishing a request, over TCP on
127.0.0.1: each probe opens its connections, then, while they are held, times a normal request and the
health probe on fresh connections, and watches how long the server takes to close the held ones.

    python bench/hostile_clients.py build/review-sentiment/package [--scale 1] [--hold-s 20] [--out F]
    python bench/hostile_clients.py --port 8080        # a server already running (behind a proxy, say)

Probes (counts are multiplied by --scale):
- half-open bodies: 96 connections send a request's headers and part of its body, then go quiet;
- idle sockets: 390 connections that send nothing;
- partial headers: 96 connections send half a request line and headers, then go quiet;
- slow drip: 8 connections send a request one byte a second;
- connection flood: 1,200 connections that send nothing, more than the server keeps open.

For each: the normal request's status and seconds, /healthz's and /readyz's, how many held connections the
server closed and when, and a normal request once the probe's connections are gone. Bounded in count and
time: a probe holds its connections at most --hold-s seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import resource
import selectors
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from distillc_runtime import cpu

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import Server  # noqa: E402

HEAD = "POST /v1/predict HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
BODY = json.dumps({"input": "the kettle was lovely"})


def request_bytes() -> bytes:
    return (HEAD.format(length=len(BODY)) + BODY).encode()


def opening(kind: str) -> bytes:
    """What a held connection sends before it goes quiet."""
    if kind == "half-open body":
        return (HEAD.format(length=len(BODY)) + BODY[:10]).encode()
    if kind == "partial headers":
        return b"POST /v1/predict HTTP/1.1\r\nhost: bench\r\ncontent-ty"
    return b""


def timed(port: int, method: str, path: str, body: str | None = None, timeout: float = 10) -> tuple[int, float]:
    """(status, seconds) of one request on a fresh connection; status 0 when it failed or timed out."""
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        headers = {"content-type": "application/json"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        status = response.status
        connection.close()
    except OSError:
        status = 0
    return status, round(time.perf_counter() - started, 3)


def open_held(port: int, count: int, first: bytes) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:  # the listen queue is full: the flood has done what it can
            break
        if first:
            with contextlib.suppress(OSError):
                sock.sendall(first)
        sock.setblocking(False)
        held.append(sock)
    return held


def watch_closed(held: list[socket.socket], seconds: float, started: float, drip: bytes = b"") -> list[float]:
    """Seconds after `started` at which the server closed each held connection (EOF or reset), within
    `seconds`. With `drip`, each open connection is sent its next byte once a second."""
    closed: list[float] = []
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(held):
        selector.register(sock, selectors.EVENT_READ, index)
    sent = [0] * len(held)
    next_drip = time.monotonic() + 1
    deadline = time.monotonic() + seconds
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data or b"\r\n\r\n" in data:  # closed, or answered with a timeout status: done with it
                selector.unregister(sock)
                closed.append(round(time.monotonic() - started, 2))
        if drip and time.monotonic() >= next_drip:
            next_drip += 1
            for key in list(selector.get_map().values()):
                index = key.data
                if sent[index] < len(drip):
                    try:
                        key.fileobj.send(drip[sent[index] : sent[index] + 1])  # type: ignore[union-attr]
                        sent[index] += 1
                    except OSError:
                        pass
    selector.close()
    return closed


def probe(port: int, kind: str, count: int, hold_s: float) -> dict[str, Any]:
    drip = request_bytes() if kind == "slow drip" else b""
    started = time.monotonic()
    held = open_held(port, count, drip[:1] if drip else opening(kind))
    opened = len(held)
    time.sleep(1.0)  # the server has seen them all
    during: dict[str, Any] = {}

    def measure() -> None:
        during["predict"] = timed(port, "POST", "/v1/predict", BODY)
        during["healthz"] = timed(port, "GET", "/healthz")
        during["readyz"] = timed(port, "GET", "/readyz")

    checker = threading.Thread(target=measure)
    checker.start()
    closed = watch_closed(held, hold_s, started, drip[1:] if drip else b"")
    checker.join()
    for sock in held:
        sock.close()
    time.sleep(0.5)
    after = timed(port, "POST", "/v1/predict", BODY)
    return {
        "probe": kind,
        "connections": opened,
        "during": {name: {"status": s, "seconds": t} for name, (s, t) in during.items()},
        "closed_by_server": len(closed),
        "all_closed_after_s": max(closed) if len(closed) == opened and closed else None,
        "after": {"status": after[0], "seconds": after[1]},
    }


PROBES = {"half-open body": 96, "idle sockets": 390, "partial headers": 96, "slow drip": 8, "connection flood": 1200}


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'probe':<18} {'conns':>5}  {'predict':>12}  {'healthz':>12}  {'readyz':>12}  {'closed':>16}  after"]
    for r in results:
        cells = [
            f"{r['during'][n]['status']} {r['during'][n]['seconds']:.2f}s" for n in ("predict", "healthz", "readyz")
        ]
        when = f"all by {r['all_closed_after_s']:.1f}s" if r["all_closed_after_s"] is not None else "not all"
        closed = f"{r['closed_by_server']} {when}"
        lines.append(
            f"{r['probe']:<18} {r['connections']:>5}  {cells[0]:>12}  {cells[1]:>12}  {cells[2]:>12}  {closed:>16}  "
            f"{r['after']['status']} {r['after']['seconds']:.2f}s"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, nargs="?", help="start this package's server (or give --port)")
    parser.add_argument("--port", type=int, help="probe a server already listening on 127.0.0.1:PORT")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every probe's connection count")
    parser.add_argument("--hold-s", type=float, default=20.0, help="longest a probe holds its connections")
    parser.add_argument("--probes", default=",".join(PROBES), help="comma-separated subset of: " + ", ".join(PROBES))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flood needs more sockets than 1,024
    if args.port is None and args.package is None:
        parser.error("give a package, or --port of a running server")
    server = Server(args.package, max_batch_size=4) if args.port is None else None
    port = server.port if server else args.port
    try:
        results = []
        for kind in args.probes.split(","):
            results.append(probe(port, kind, max(1, int(PROBES[kind] * args.scale)), args.hold_s))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    finally:
        if server:
            server.close()
    print(table(results))
    print(f"CPU: {cpu.text(cpu.describe())}")
    if args.out:
        args.out.write_text(json.dumps({"probes": results, "cpu": cpu.describe()}, indent=2))


if __name__ == "__main__":
    main()
