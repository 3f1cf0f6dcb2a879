"""The capture proxy's side facing the application: an HTTP/1.1 server, parsed by httptools.

Every request is handed whole to one handler, so a web framework's routing, middlewares and request objects
would only add to what each request costs (the proxy has to stay within a couple of milliseconds of its
upstream at a few thousand requests a second). Requests on one connection are answered in order; a client
that sends more before reading its answers is stopped being read. A body over `max_body` bytes is read and
dropped, then refused with 413; a request that is not HTTP gets 400. Either closes the connection.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import httptools
import orjson

MAX_HEAD = 64 * 2**10  # bytes of a request's line and headers


@dataclass
class Request:
    method: str
    path: str  # as sent, percent-encoded, without the query
    query: str
    headers: list[tuple[str, str]]  # as sent: order, case and repeats kept
    body: bytes


Handler = Callable[[Request, "Reply"], Awaitable[None]]


class Reply:
    """The answer to one request: `send` a whole body, or `start` and then `write` pieces and `end`."""

    def __init__(self, connection: _Connection, keep_alive: bool, chunked: bool) -> None:
        self._connection = connection
        self._keep_alive = keep_alive
        self._chunked = chunked  # HTTP/1.1: a body of unknown length goes in chunks; 1.0: until the close
        self._head = b""
        self.started = False

    def send(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        head = self._status_and_headers(status, reason, [*headers, ("Content-Length", str(len(body)))])
        self._connection.write(head + body)
        self.started = True
        if not self._keep_alive:
            self._connection.close()

    def start(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        """The head, sent with the first piece of body: one write, not two."""
        framing = [("Transfer-Encoding", "chunked")] if self._chunked else []
        self._head = self._status_and_headers(status, reason, [*headers, *framing])
        self.started = True

    async def write(self, data: bytes) -> None:
        self.write_now(data)
        await self._connection.drain()

    def write_now(self, data: bytes) -> None:
        """`write` for a caller that cannot wait: it brakes its source by `brake` instead."""
        if data:
            self._connection.write(self._head + self._frame(data))
            self._head = b""

    def brake(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Call `pause` while the client's socket buffer is full, and `resume` once it drains again."""
        self._connection.brake = (pause, resume)
        if not self._connection.writable:
            pause()

    def end(self, data: bytes = b"") -> None:
        self._connection.write(self._head + self._frame(data) + (b"0\r\n\r\n" if self._chunked else b""))
        self._head = b""
        self._connection.brake = None
        if not (self._keep_alive and self._chunked):
            self._connection.close()

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self._chunked and data else data

    def _status_and_headers(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)]
        if not self._keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def refusal(
    status: int, reason: str, message: str, kind: str = "invalid_request_error"
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """An answer in OpenAI's error shape, as (status, reason, headers, body) for Reply.send."""
    body = orjson.dumps({"error": {"message": message, "type": kind}})
    return status, reason, [("Content-Type", "application/json")], body


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, max_body: int, loop: asyncio.AbstractEventLoop) -> None:
        self._handler, self._max_body = handler, max_body
        self._loop = loop  # kept: asyncio.get_running_loop() is a getpid() system call per use
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[tuple[Request, bool, bool, int]] = deque()  # request, keep-alive, 1.1, refusal
        self._worker: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.writable = True
        self.brake: tuple[Callable[[], None], Callable[[], None]] | None = None  # Reply.brake's
        self.closed = False
        self._begin()

    def _begin(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._body: list[bytes] = []
        self._size = 0
        self._refuse = 0  # the status a request gets instead of an answer

    # asyncio.Protocol.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP transport, whichever loop made it

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse_now(400, "Bad Request", "connection upgrades are not passed on")
        except httptools.HttpParserError as exc:
            self._refuse_now(400, "Bad Request", f"not an HTTP/1.1 request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._worker is not None:
            self._worker.cancel()  # the client is gone: so is the rest of its answer
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self.writable = False
        if self.brake is not None:
            self.brake[0]()

    def resume_writing(self) -> None:
        self.writable = True
        if self.brake is not None:
            self.brake[1]()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # httptools callbacks.
    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        self._grow_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        length = next((v for k, v in self._headers if k.lower() == "content-length"), "0")
        if length.isdigit() and int(length) > self._max_body:
            self._refuse = 413

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._refuse, self._body = 413, []  # read on to the end of the request, keeping none of it
        elif not self._refuse:
            self._body.append(body)

    def on_message_complete(self) -> None:
        path, _, query = self._url.decode("latin-1").partition("?")
        method = self._parser.get_method().decode("latin-1")
        request = Request(method, path, query, self._headers, b"".join(self._body))
        version_11 = self._parser.get_http_version() == "1.1"
        self._waiting.append((request, self._parser.should_keep_alive() and not self._refuse, version_11, self._refuse))
        self._begin()
        if len(self._waiting) > 1 and self._transport is not None:
            self._transport.pause_reading()  # a client far ahead of its answers waits for them
        if self._worker is None or self._worker.done():
            self._worker = self._loop.create_task(self._answer())

    # Answering, one request at a time.
    async def _answer(self) -> None:
        while self._waiting and not self.closed:
            request, keep_alive, version_11, refuse = self._waiting.popleft()
            if self._transport is not None and len(self._waiting) <= 1:
                self._transport.resume_reading()
            reply = Reply(self, keep_alive, version_11)
            if refuse:
                limit = f"a request body is limited to {self._max_body} bytes"
                reply.send(*refusal(413, "Payload Too Large", limit))
                return
            try:
                await self._handler(request, reply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the handler's own failure: say so, never leave the client hanging
                print(f"distillc capture: {request.method} {request.path}: {exc}", file=sys.stderr, flush=True)
                if reply.started:
                    self.close()  # mid-answer: the client sees it cut short, not a false end
                else:
                    reply.send(*refusal(502, "Bad Gateway", f"the proxy failed: {exc}"))

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise httptools.HttpParserError(f"request line and headers over {MAX_HEAD} bytes")

    def _refuse_now(self, status: int, reason: str, message: str) -> None:
        if self._transport is not None and not self.closed:
            Reply(self, keep_alive=False, chunked=False).send(*refusal(status, reason, message))

    # For Reply.
    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    async def drain(self) -> None:
        if not self.writable and not self.closed:
            self._drained = self._loop.create_future()
            await self._drained

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


async def serve_http(handler: Handler, host: str, port: int, max_body: int) -> asyncio.Server:
    """Listen on host:port, answering every request with `handler`."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(handler, max_body, loop), host, port, reuse_address=True)
