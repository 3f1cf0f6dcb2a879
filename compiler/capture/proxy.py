"""`distillc capture`: an OpenAI-compatible pass-through that records each chat request and its answer.

Point an application's base URL at it: every request goes on to `upstream` with the client's own headers
(its Authorization included, which is never written anywhere), and every answer comes back as the upstream
sent it, errors included, byte for byte (the proxy asks upstream for an uncompressed body so that it can read
it). Streamed answers are passed on event by event and assembled as they pass.

Each chat completion is appended to a capture file as one `chat_log` record (`{"request", "response",
"status"}`; `inputs.source: {path: DIR, format: chat_log}` reads the folder back). A record is written with
one write() before the client has the end of its answer, so a kill -9 of the proxy loses only requests still
in flight (a written record is the kernel's, whatever becomes of the process); a thread fsyncs the file at
most every SYNC_INTERVAL seconds, so a power cut loses at most the records of the last interval. (An fsync
after every record cost more CPU than the rest of the proxy together, at a few thousand requests a second.)
Memory per request is bounded: bodies over MAX_REQUEST are refused (413), and at most MAX_CAPTURED bytes of
an answer are kept for the record (the client gets all of it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from distillc.capture.http import Reply, Request, refusal, serve_http
from distillc.capture.upstream import Upstream, UpstreamError

MAX_REQUEST = 8 * 2**20  # bytes of a request body
MAX_CAPTURED = 4 * 2**20  # bytes of an answer kept for its record
PARSE_EVERY = 256 * 2**10  # bytes of a streamed answer left unparsed
SYNC_INTERVAL = 0.2  # seconds between fsyncs of new records
# Headers that belong to one connection, or that the proxy sets itself.
HOP = {
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate",
}  # fmt: skip


class CaptureFile:
    """Records appended to `folder`/capture-<time>-<pid>.jsonl, one write() each (O_APPEND), and fsync'd by a
    thread when there are new ones, at most every SYNC_INTERVAL seconds."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.path = folder / f"capture-{stamp}-{os.getpid()}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.records = 0
        self._written = threading.Event()
        self._closing = False
        self._syncer = threading.Thread(target=self._sync, daemon=True)
        self._syncer.start()

    def append(self, record: dict[str, Any]) -> None:
        line = memoryview(orjson.dumps(record) + b"\n")
        while line:  # one write() for a regular file; the loop is for a signal's short write
            line = line[os.write(self._fd, line) :]
        self.records += 1
        self._written.set()

    def _sync(self) -> None:
        while not self._closing:
            self._written.wait()
            self._written.clear()
            os.fsync(self._fd)
            time.sleep(SYNC_INTERVAL)  # records written meanwhile share the next fsync

    def close(self) -> None:
        self._closing = True
        self._written.set()
        self._syncer.join(timeout=5)
        os.fsync(self._fd)
        os.close(self._fd)


class StreamedAnswer:
    """A streamed chat completion (server-sent events of chat.completion.chunk) assembled as it passes, into
    the chat.completion it amounts to. Events are parsed a batch at a time (one JSON parse for many), at
    the end or once PARSE_EVERY bytes wait. Memory: the answer's text, up to MAX_CAPTURED bytes, and the
    unparsed events."""

    def __init__(self) -> None:
        self._unparsed: list[bytes] = []
        self._waiting = 0
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}
        self._meta: dict[str, Any] = {}
        self._size = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        self._unparsed.append(data)
        self._waiting += len(data)
        if self._waiting > PARSE_EVERY:
            self._parse(final=False)

    def _parse(self, final: bool) -> None:
        *lines, rest = b"".join(self._unparsed).split(b"\n")
        if final:
            lines.append(rest)
        elif len(rest) > MAX_CAPTURED:  # one endless line: not an event stream
            rest, self.truncated = b"", True
        self._unparsed, self._waiting = ([rest], len(rest)) if rest and not final else ([], 0)
        payloads = [line[5:].strip() for line in map(bytes.strip, lines) if line.startswith(b"data:")]
        payloads = [payload for payload in payloads if payload and payload != b"[DONE]"]
        try:
            chunks = orjson.loads(b"[" + b",".join(payloads) + b"]")
        except orjson.JSONDecodeError:  # one bad event: parse them one by one, skipping it
            chunks = [chunk for payload in payloads if (chunk := _json_or_none(payload)) is not None]
        for chunk in chunks:
            if isinstance(chunk, dict):
                self._event(chunk)

    def _event(self, chunk: dict[str, Any]) -> None:
        if not self._meta:  # the same in every chunk
            self._meta = {k: chunk[k] for k in ("id", "model", "created") if chunk.get(k) is not None}
        if chunk.get("usage") is not None:  # in the last chunk, when asked for
            self._meta["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            piece = (choice.get("delta") or {}).get("content") or ""
            self._size += len(piece)
            if self._size > MAX_CAPTURED:
                self.truncated = True
            else:
                self._texts.setdefault(index, []).append(piece)
            if choice.get("finish_reason") is not None or index not in self._finish:
                self._finish[index] = choice.get("finish_reason")

    def completion(self) -> dict[str, Any]:
        self._parse(final=True)
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": "".join(self._texts.get(index, []))},
                "finish_reason": self._finish[index],
            }
            for index in sorted(self._finish)
        ]
        return {**self._meta, "object": "chat.completion", "choices": choices}


class Relay:
    """An answer passed on to the client piece by piece as the upstream's connection receives it, and kept
    (a chat answer) for its record. A chat answer's latest piece (a stream's: the one with its [DONE] event)
    is held back for Reply.end: the record is written before the client can know its answer is whole, so
    a kill -9 loses only answers still in flight."""

    def __init__(self, reply: Reply, chat: bool, streamed: bool) -> None:
        self.reply, self.chat, self.streamed = reply, chat, streamed
        self.assembled, self.kept, self.size = StreamedAnswer(), bytearray(), 0
        self.held = b""

    def piece(self, data: bytes) -> None:
        if self.chat and self.streamed:
            self.assembled.feed(data)
        elif self.chat and self.size + len(data) <= MAX_CAPTURED:
            self.kept += data
        self.size += len(data)
        if self.held:
            self.reply.write_now(self.held)
        self.held = data if self.chat and (not self.streamed or b"[DONE]" in data) else b""
        if not self.held:
            self.reply.write_now(data)


def bad_gateway(reply: Reply, message: str) -> None:
    reply.send(*refusal(502, "Bad Gateway", message, kind="upstream_error"))


def _json_or_none(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where there is one: it takes a sixth off what each request costs the proxy."""
    try:
        import uvloop
    except ImportError:  # Windows
        return None
    return uvloop.new_event_loop


def serve(upstream: str, host: str, port: int, folder: Path, ready: Any = None) -> None:
    """Run the proxy until SIGINT or SIGTERM; `ready(url, capture_path)` is called once it listens."""
    capture = CaptureFile(folder)
    proxy = Proxy(upstream.rstrip("/"), capture)
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(proxy.run(host, port, lambda: ready and ready(f"http://{host}:{port}/v1", capture.path)))
    except KeyboardInterrupt:
        pass
    finally:
        capture.close()


class Proxy:
    def __init__(self, upstream: str, capture: CaptureFile) -> None:
        self.upstream, self.capture = Upstream(upstream), capture

    async def run(self, host: str, port: int, ready: Callable[[], object]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        server = await serve_http(self.forward, host, port, MAX_REQUEST)
        ready()
        try:
            await stop.wait()
        finally:
            server.close()
            self.upstream.close()

    async def forward(self, request: Request, reply: Reply) -> None:
        """Send `request` on to the upstream and its answer back, recording a chat completion."""
        path = request.path.lstrip("/")
        suffix = path.removeprefix("v1/") if path.startswith("v1/") else path
        sent = [(k, v) for k, v in request.headers if k.lower() not in HOP and k.lower() != "accept-encoding"]
        started = time.perf_counter()
        try:
            upstream = await self.upstream.request(
                request.method, suffix, request.query, [*sent, ("Accept-Encoding", "identity")], request.body
            )
        except UpstreamError as exc:
            return bad_gateway(reply, f"upstream unreachable: {exc}")
        chat = request.method == "POST" and suffix.rstrip("/").endswith("chat/completions")
        try:
            streamed = "text/event-stream" in (upstream.header("content-type") or "")
            headers = [(k, v) for k, v in upstream.headers if k.lower() not in HOP]
            length = upstream.content_length
            if not streamed and length is not None and length <= MAX_CAPTURED:
                # A whole answer of known size: read, recorded, then sent in one write (fewer system calls,
                # which are most of what a request costs the proxy).
                try:
                    data = await upstream.read()
                except UpstreamError as exc:  # nothing has gone to the client yet: it can be told
                    return bad_gateway(reply, f"upstream broke off its answer: {exc}")
                if chat:
                    self._record(request.body, upstream.status, False, StreamedAnswer(), data, len(data), started)
                reply.send(upstream.status, upstream.reason, headers, data)
                return
            reply.start(upstream.status, upstream.reason, headers)
            relay = Relay(reply, chat, streamed)
            reply.brake(upstream.pause, upstream.resume)  # a slow client slows its upstream
            await upstream.relay(relay.piece)
            if chat:
                self._record(request.body, upstream.status, streamed, relay.assembled, relay.kept, relay.size, started)
            reply.end(relay.held)  # with the end of the body, in one write
        finally:
            upstream.close()

    def _record(
        self,
        body: bytes,
        status: int,
        streamed: bool,
        assembled: StreamedAnswer,
        kept: bytes | bytearray,
        size: int,
        started: float,
    ) -> None:
        """One chat_log record: the request as sent, and the answer as a chat.completion (or the error)."""
        try:
            request_json = orjson.loads(body)
        except orjson.JSONDecodeError:
            return  # not a chat request the capture can be read back from; it was passed on all the same
        if not isinstance(request_json, dict):
            return
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "status": status,
            "stream": streamed,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "request": request_json,
        }
        if streamed and status == 200:
            record["response"] = assembled.completion()
            record |= {"truncated": True} if assembled.truncated else {}
        elif size > len(kept):
            record |= {"response": None, "truncated": True}
        else:
            try:
                record["response"] = orjson.loads(kept)
            except orjson.JSONDecodeError:
                record["response"] = None
            if status != 200:
                record["error"] = kept[:2000].decode("utf-8", "replace")
        self.capture.append(record)
