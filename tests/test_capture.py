"""`distillc capture` against the fake teacher, over real HTTP: answers pass byte for byte (streamed or not,
errors included), the client's key never reaches the disk, a kill -9 loses only requests in flight, and the
captures build as a chat_log source without asking the teacher again."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distillc import api
from distillc.data.imports import message_rows
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import free_port

KEY = "sk-test-5ecret-never-on-disk"


def faults(user: str, attempt: int) -> str | None:
    return {"rate me": "429:7", "fail me": "500"}.get(user)


@contextmanager
def capturing(upstream: str, out: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    command = [sys.executable, "-m", "distillc", "capture", "--upstream", upstream, "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen([*command, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            send(f"http://127.0.0.1:{port}/v1", "GET", "/models")  # any answer: it listens
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        stopped = process.poll() is None
        if stopped:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)
        said = process.stderr.read() if process.stderr else ""
        assert "Traceback" not in said, said  # failures are told in a line, never as a traceback
        if stopped:
            assert process.returncode == 0, said


def send(base: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection: (status, headers, body as received, chunked transfer undone)."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connection.request(method, url.path + path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def chat(text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "test-teacher", "messages": [{"role": "user", "content": text}], "stream": stream}


def captured(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(out.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_answers_pass_byte_for_byte_and_are_recorded_without_the_key(tmp_path: Path) -> None:
    out = tmp_path / "captures"
    with FakeTeacher(sentiment, fault=faults) as teacher, capturing(teacher.base_url, out) as (proxy, _):
        for body in (chat("the kettle was lovely"), chat("the screen was broken and the app too", stream=True)):
            direct, through = (
                send(teacher.base_url, "POST", "/chat/completions", body),
                send(proxy, "POST", "/chat/completions", body),
            )
            assert through[0] == direct[0] == 200 and through[2] == direct[2]
            assert through[1]["content-type"] == direct[1]["content-type"]
        assert send(proxy, "GET", "/models")[2] == send(teacher.base_url, "GET", "/models")[2]
        for text, status in (("rate me", 429), ("fail me", 500)):
            direct, through = (
                send(base, "POST", "/chat/completions", chat(text)) for base in (teacher.base_url, proxy)
            )
            assert through[0] == direct[0] == status and through[2] == direct[2]
        assert send(proxy, "POST", "/chat/completions", chat("rate me"))[1]["retry-after"] == "7"
        assert set(teacher.authorizations) == {f"Bearer {KEY}"}  # the client's own key went on upstream
    records = captured(out)
    assert [r["status"] for r in records] == [200, 200, 429, 500, 429]
    assert records[1]["stream"] and records[1]["response"]["choices"][0]["message"]["content"] == "negative"
    assert records[2]["error"] and "rate limited" in records[2]["error"]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert KEY.encode() not in on_disk and b"5ecret" not in on_disk
    rows = [r for p in sorted(out.glob("*.jsonl")) for r in message_rows(p, "chat_log", "")]
    assert [(r.text, r.answer) for r in rows] == [
        ("the kettle was lovely", "positive"),
        ("the screen was broken and the app too", "negative"),
        ("rate me", None),
        ("fail me", None),
        ("rate me", None),
    ]


def test_an_unreachable_upstream_is_a_502_with_a_reason(tmp_path: Path) -> None:
    with capturing(f"http://127.0.0.1:{free_port()}/v1", tmp_path / "c") as (proxy, _):
        status, _, body = send(proxy, "POST", "/chat/completions", chat("hello"))
    assert status == 502 and "upstream unreachable" in json.loads(body)["error"]["message"]


def test_kill_9_under_load_loses_only_requests_in_flight_and_the_captures_build(tmp_path: Path) -> None:
    out = tmp_path / "captures"
    texts = review_texts(400)
    answered: list[str] = []  # inputs whose answer the client had whole before the kill
    with FakeTeacher(sentiment, delay_s=0.002, record=False) as teacher:
        with capturing(teacher.base_url, out) as (proxy, process):
            stop = threading.Event()

            def client(chunk: list[str]) -> None:
                for n, text in enumerate(chunk):
                    if stop.is_set():
                        return
                    try:
                        status, _, body = send(proxy, "POST", "/chat/completions", chat(text, stream=n % 2 == 1))
                    except (OSError, http.client.HTTPException):  # the proxy was killed mid-answer
                        return
                    if status == 200 and (b"[DONE]" in body or json.loads(body)["choices"]):
                        answered.append(text)

            threads = [threading.Thread(target=client, args=(texts[k::16],)) for k in range(16)]
            for thread in threads:
                thread.start()
            while len(answered) < 150:
                time.sleep(0.005)
            os.kill(process.pid, signal.SIGKILL)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            process.wait(timeout=10)
        records = [r for p in sorted(out.glob("*.jsonl")) for r in message_rows(p, "chat_log", "") if not r.problem]
        kept = {r.text for r in records if r.answer is not None}
        assert set(answered) <= kept, f"{len(set(answered) - kept)} answered requests missing from the capture"
        assert len(kept) < len(texts)  # the kill came mid-load
        # The captures, read back as a source: every captured answer is imported, none is asked again.
        spec = write_spec(tmp_path / "project", base_url=teacher.base_url, student="unused", inputs=[])
        edit_spec(spec, {"inputs.source": {"path": str(out), "format": "chat_log"}})
        asked = teacher.requests
        result = api.build(spec, out=tmp_path / "out", until="label")
        assert teacher.requests == asked
    assert result.stage("label").summary["imported"]["labeled"] == len(kept)


def test_a_request_body_over_the_limit_is_refused_with_413(tmp_path: Path) -> None:
    from distillc.capture.proxy import MAX_REQUEST

    with FakeTeacher(sentiment) as teacher, capturing(teacher.base_url, tmp_path / "c") as (proxy, _):
        status, _, _ = send(proxy, "POST", "/chat/completions", chat("x" * (MAX_REQUEST + 1)))
        assert status == 413 and teacher.requests == 0
        assert send(proxy, "POST", "/chat/completions", chat("the kettle was lovely"))[0] == 200  # and serves on


def raw_exchange(base: str, data: bytes, read_until: bytes = b"", timeout: float = 10) -> bytes:
    """Bytes sent as they are on one connection; what comes back until `read_until` has come twice or the
    connection closes."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while not read_until or received.count(read_until) < 2:
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    return received


def test_pipelined_requests_are_answered_in_order_and_a_malformed_one_gets_400(tmp_path: Path) -> None:
    with FakeTeacher(sentiment) as teacher, capturing(teacher.base_url, tmp_path / "c") as (proxy, _):
        bodies = [json.dumps(chat(text)).encode() for text in ("the kettle was lovely", "the screen was broken")]
        requests = b"".join(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
            for body in bodies
        )
        answers = raw_exchange(proxy, requests, read_until=b'"finish_reason"')
        assert answers.count(b"HTTP/1.1 200") == 2
        assert answers.index(b'"positive"') < answers.index(b'"negative"')  # in the order asked
        refused = raw_exchange(proxy, b"NOT HTTP AT ALL\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 400") and b"not an HTTP/1.1 request" in refused
        assert send(proxy, "POST", "/chat/completions", chat("the kettle was lovely"))[0] == 200  # serves on


def test_a_client_gone_mid_stream_and_upstream_faults_leave_the_proxy_serving(tmp_path: Path) -> None:
    def fault(user: str, attempt: int) -> str | None:
        return {"reset me": "reset", "cut me": "truncated"}.get(user)

    slow = FakeTeacher(lambda text: " ".join(["word"] * 2000), fault=fault)
    with slow as teacher, capturing(teacher.base_url, tmp_path / "c") as (proxy, process):
        body = json.dumps(chat("a long answer", stream=True)).encode()
        request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        url = urlsplit(proxy)
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(request)
            assert sock.recv(100).startswith(b"HTTP/1.1 200")  # the answer began; the client goes
        status, _, answer = send(proxy, "POST", "/chat/completions", chat("reset me"))
        assert status == 502 and b"upstream unreachable" in answer
        status, _, answer = send(proxy, "POST", "/chat/completions", chat("cut me"))  # whole answers are read first
        assert status == 502 and b"upstream broke off its answer" in answer
        for _ in range(3):
            assert send(proxy, "POST", "/chat/completions", chat("the kettle was lovely"))[0] == 200
        assert process.poll() is None


def test_a_kept_alive_upstream_connection_closed_under_a_request_is_retried_on_a_fresh_one(tmp_path: Path) -> None:
    """An upstream may close an idle kept-alive connection just as the proxy sends on it; the request never
    reached it, so the proxy sends it again on a new connection rather than failing the client."""
    answer = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}).encode()
    connections: list[int] = []

    class OneAnswerThenClose(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            connections.append(1)
            self.request.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(answer)
            self.request.sendall(head + answer)
            time.sleep(0.3)  # keep-alive promised, then closed without reading the next request

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), OneAnswerThenClose) as upstream:
        upstream.daemon_threads = True
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
        with capturing(base, tmp_path / "c") as (proxy, _):
            first = len(connections)
            url = urlsplit(proxy)
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            for text in ("one", "two"):  # the second within the upstream's 0.3 s: on the connection it will close
                connection.request("POST", "/v1/chat/completions", body=json.dumps(chat(text)))
                response = connection.getresponse()
                assert response.status == 200 and response.read() == answer
            connection.close()
            upstream.shutdown()
        assert len(connections) - first == 2  # the second request went again, on a connection of its own


def test_a_streamed_answer_is_assembled_whatever_pieces_it_arrives_in() -> None:
    from distillc.capture import proxy

    words = [f"w{n} " for n in range(30_000)]  # ~450 KB of events: parsed in more than one batch
    events = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": words[0]}, "finish_reason": None}]}
    ]
    events += [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words[1:]]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    stream = stream.replace(b"\r\n\r\n", b"\r\n\r\ndata: {not json\r\n\r\n", 1) + b"data: [DONE]\r\n\r\n"
    assert len(stream) > proxy.PARSE_EVERY
    for piece in (7, 4096, len(stream)):
        assembled = proxy.StreamedAnswer()
        for start in range(0, len(stream), piece):
            assembled.feed(stream[start : start + piece])
        completion = assembled.completion()
        assert completion["id"] == "c1" and not assembled.truncated
        assert completion["choices"] == [
            {"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}
        ]


def rss_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def test_a_client_that_stops_reading_slows_its_upstream_instead_of_filling_the_proxys_memory(tmp_path: Path) -> None:
    piece, pieces = b"x" * 2**16, 3200  # a 200 MB answer, in chunks, as fast as the proxy takes them
    sent: list[int] = []

    class Flood(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            if b"/big/" not in self.request.recv(65536):  # capturing()'s probe
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                return
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
            self.request.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%b\r\n" % (len(piece), piece)
            for n in range(pieces):
                self.request.sendall(chunk)
                sent.append(n)
            self.request.sendall(b"0\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Flood) as upstream:
        upstream.daemon_threads = True
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
        with capturing(base, tmp_path / "c") as (proxy, process):
            before = rss_mb(process.pid)
            url = urlsplit(proxy)
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            connection.request("GET", "/v1/files/big/content")
            response = connection.getresponse()
            assert response.status == 200
            time.sleep(2)  # the client reads nothing: socket buffers fill, then the upstream waits
            held = rss_mb(process.pid) - before
            waiting_at = len(sent)
            assert waiting_at < pieces // 2, "the upstream was never slowed"
            size = 0
            while data := response.read(2**20):
                size += len(data)
            connection.close()
            assert size == len(piece) * pieces and len(sent) == pieces  # all of it, once the client read on
        assert held < 32, f"the proxy held {held:.0f} MB of an answer its client was not reading"
