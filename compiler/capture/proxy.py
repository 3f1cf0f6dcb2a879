"""`distillc capture`: an OpenAI-compatible pass-through that records each chat request and its answer.

Point an application's base URL at it: every request goes on to `upstream` with the client's own headers
(its Authorization included, which is never written anywhere), and every answer comes back as the upstream
sent it, errors included, byte for byte (the proxy asks upstream for an uncompressed body so that it can read
it). Streamed answers are passed on event by event and assembled as they pass.

Each chat completion is appended to a capture file as one `chat_log` record (`{"request", "response",
"status"}`; `inputs.source: {path: DIR, format: chat_log}` reads the folder back). A record is written with
one write() before the client has the end of its answer, so a kill -9 of the proxy loses only requests still
in flight; a thread fsyncs the file right after, so a power cut loses at most the records of that moment.
Memory per request is bounded: bodies over MAX_REQUEST are refused (413), and at most MAX_CAPTURED bytes of
an answer are kept for the record (the client gets all of it).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

MAX_REQUEST = 8 * 2**20  # bytes of a request body
MAX_CAPTURED = 4 * 2**20  # bytes of an answer kept for its record
# Headers that belong to one connection, or that the proxy sets itself.
HOP = {
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "accept-encoding", "content-encoding",
}  # fmt: skip


class CaptureFile:
    """Records appended to `folder`/capture-<time>-<pid>.jsonl, one write() each (O_APPEND), and fsync'd by a
    thread as soon as there are new ones."""

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

    def close(self) -> None:
        self._closing = True
        self._written.set()
        self._syncer.join(timeout=5)
        os.fsync(self._fd)
        os.close(self._fd)


class StreamedAnswer:
    """A streamed chat completion (server-sent events of chat.completion.chunk) assembled as it passes, into
    the chat.completion it amounts to. Memory: the answer's text, up to MAX_CAPTURED bytes."""

    def __init__(self) -> None:
        self._pending = b""
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}
        self._meta: dict[str, Any] = {}
        self._size = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        if len(self._pending) > MAX_CAPTURED:  # one endless line: not an event stream
            self._pending, self.truncated = b"", True
        for line in lines:
            self._event(line.strip())

    def _event(self, line: bytes) -> None:
        if not line.startswith(b"data:") or (payload := line[5:].strip()) == b"[DONE]":
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        self._meta |= {k: chunk[k] for k in ("id", "model", "created", "usage") if chunk.get(k) is not None}
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
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": "".join(self._texts.get(index, []))},
                "finish_reason": self._finish[index],
            }
            for index in sorted(self._finish)
        ]
        return {**self._meta, "object": "chat.completion", "choices": choices}


def serve(upstream: str, host: str, port: int, folder: Path, ready: Any = None) -> None:
    """Run the proxy until interrupted; `ready(url, capture_path)` is called once it listens."""
    from aiohttp import web

    capture = CaptureFile(folder)
    app = web.Application(client_max_size=MAX_REQUEST)
    app["proxy"] = Proxy(upstream.rstrip("/"), capture)
    app.router.add_route("*", "/{path:.*}", app["proxy"].forward)
    app.on_startup.append(app["proxy"].start)
    app.on_cleanup.append(app["proxy"].stop)

    async def announce(_: web.Application) -> None:
        if ready is not None:
            ready(f"http://{host}:{port}/v1", capture.path)

    app.on_startup.append(announce)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)
    finally:
        capture.close()


class Proxy:
    def __init__(self, upstream: str, capture: CaptureFile) -> None:
        self.upstream, self.capture = upstream, capture
        self.session: Any = None

    async def start(self, _: Any) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            auto_decompress=False,
        )

    async def stop(self, _: Any) -> None:
        await self.session.close()

    async def forward(self, request: Any) -> Any:
        """Send `request` on to the upstream and its answer back, recording a chat completion."""
        import aiohttp
        from aiohttp import web

        path = request.match_info["path"]
        suffix = path.removeprefix("v1/") if path.startswith("v1/") else path
        body = await request.read()
        sent = {k: v for k, v in request.headers.items() if k.lower() not in HOP or k.lower() == "content-encoding"}
        headers = sent | {"Accept-Encoding": "identity"}
        started = time.perf_counter()
        try:
            upstream = await self.session.request(
                request.method, f"{self.upstream}/{suffix}", params=request.query, data=body, headers=headers
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            message = f"upstream unreachable: {type(exc).__name__}: {exc}"
            return web.json_response({"error": {"message": message, "type": "upstream_error"}}, status=502)
        chat = request.method == "POST" and suffix.rstrip("/").endswith("chat/completions")
        async with upstream:
            streamed = "text/event-stream" in upstream.headers.get("content-type", "")
            reply = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP:
                    reply.headers.add(key, value)
            if upstream.headers.get("content-encoding"):
                reply.headers["content-encoding"] = upstream.headers["content-encoding"]
            if not streamed and upstream.content_length is not None and upstream.content_length <= MAX_CAPTURED:
                # A whole answer of known size: read, recorded, then sent in one write (fewer system calls,
                # which are most of what a request costs the proxy).
                data = await upstream.read()
                if chat:
                    self._record(body, upstream.status, False, StreamedAnswer(), data, len(data), started)
                return web.Response(body=data, status=upstream.status, reason=upstream.reason, headers=reply.headers)
            await reply.prepare(request)
            assembled, kept, size = StreamedAnswer(), bytearray(), 0
            # The record is written before the client can know its answer is whole: a body's last bytes (a
            # stream's [DONE] event) wait for it, so a kill -9 loses only answers still in flight.
            held = b""
            async for data in upstream.content.iter_any():
                if chat and streamed:
                    assembled.feed(data)
                elif chat and size + len(data) <= MAX_CAPTURED:
                    kept += data
                size += len(data)
                if held:
                    await reply.write(held)
                held = data if chat and (not streamed or b"[DONE]" in data) else b""
                if not held:
                    await reply.write(data)
            if chat:
                self._record(body, upstream.status, streamed, assembled, bytes(kept), size, started)
            if held:
                await reply.write(held)
            await reply.write_eof()
        return reply

    def _record(
        self,
        body: bytes,
        status: int,
        streamed: bool,
        assembled: StreamedAnswer,
        kept: bytes,
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
