"""Clients that hold connections without finishing a request cannot stall the package's server: against a
real server subprocess, half-open bodies, idle sockets, partial headers, a slow drip and a connection
flood (past the server's connection cap) are each closed within the header deadline, a normal request
and /healthz are answered within a second or two while they are held, and the server answers after."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import set_deploy, start

ROOT = Path(__file__).parent.parent
HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 64


@pytest.fixture(scope="module")
def results(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    package = shutil.copytree(tiny_package, tmp_path_factory.mktemp("hostile") / "package")
    set_deploy(package, header_timeout_s=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS)
    out = package.parent / "probes.json"
    command = [sys.executable, str(ROOT / "bench" / "hostile_clients.py"), str(package), "--out", str(out)]
    command += ["--scale", "0.25", "--hold-s", "8"]  # 24 half-open, 97 idle (over the cap), 300 in the flood
    subprocess.run(command, check=True, timeout=300, capture_output=True)
    return {probe["probe"]: probe for probe in json.loads(out.read_text())["probes"]}


PROBES = ["half-open body", "idle sockets", "partial headers", "slow drip", "connection flood"]


@pytest.mark.parametrize("probe", PROBES)
def test_held_connections_do_not_stall_the_server(results: dict[str, dict], probe: str) -> None:
    result = results[probe]
    during = result["during"]
    assert during["predict"]["status"] == 200 and during["predict"]["seconds"] < 2, result
    assert during["healthz"]["status"] == 200 and during["healthz"]["seconds"] < 2, result
    assert during["readyz"]["status"] == 200, result  # held connections are not load: the pod stays routable
    # Every held connection is closed by the server, within the header deadline and a margin.
    assert result["all_closed_after_s"] is not None and result["all_closed_after_s"] < HEADER_TIMEOUT_S + 3, result
    assert result["after"]["status"] == 200, result


def test_the_flood_past_the_cap_is_evicted_at_once(results: dict[str, dict]) -> None:
    """At the cap, each new connection closes the one that waited longest: most of the flood is closed
    before the deadline, rather than refusing newcomers."""
    flood = results["connection flood"]
    assert flood["connections"] > MAX_CONNECTIONS
    assert flood["closed_by_server"] == flood["connections"]


@pytest.fixture(scope="module")
def server(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    package = shutil.copytree(tiny_package, tmp_path_factory.mktemp("slow") / "package")
    process, port = start(package, header_timeout_s=HEADER_TIMEOUT_S)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def raw_request(body: bytes) -> bytes:
    head = "POST /v1/predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\n\r\n").encode()


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < content_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_an_honest_slow_body_is_answered(server: int) -> None:
    """A body sent in pieces over longer than the header deadline, but faster than the minimum rate the
    declared length allows, is answered."""
    body = b'{"input": "the kettle was lovely"' + b" " * 3000 + b"}"  # 3 KB, within the prompt limit
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(raw_request(body))
        for i in range(0, len(body), 1000):
            time.sleep(0.6)  # 2.4 s in all, over the 2 s deadline; 3 KB allows 2 + 3 s
            sock.sendall(body[i : i + 1000])
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_an_idle_keep_alive_connection_is_closed(server: int) -> None:
    body = json.dumps({"input": "the kettle was lovely"}).encode()
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(raw_request(body) + body)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 8


def test_a_request_cut_off_mid_body_gets_408(server: int) -> None:
    body = json.dumps({"input": "the kettle was lovely"}).encode()
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(raw_request(body) + body[:5])
        started = time.monotonic()
        answer = read_response(sock)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 2
    assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer


def test_readiness_turns_not_ready_while_requests_are_refused(tiny_package: Path, tmp_path: Path) -> None:
    """While the queue is full and requests get 429, /readyz answers 503 (so an orchestrator routes
    elsewhere), and ready again once the burst is over."""
    import http.client

    process, port = start(shutil.copytree(tiny_package, tmp_path / "package"), max_queue=1, max_batch_size=1)
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/readyz")
            seen.append(connection.getresponse().status)
            connection.close()

    def predict(i: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"input": f"the app was useless {i}"})
        connection.request("POST", "/v1/predict", body, {"content-type": "application/json"})
        status = connection.getresponse().status
        connection.close()
        return status

    try:
        poller = threading.Thread(target=poll)
        poller.start()
        with ThreadPoolExecutor(30) as pool:
            statuses = list(pool.map(predict, range(300)))
        stop.set()
        poller.join()
        assert 429 in statuses and 503 in seen, (set(statuses), set(seen))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/readyz")
        assert connection.getresponse().status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
