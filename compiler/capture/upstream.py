"""The capture proxy's client to its upstream: HTTP/1.1 over kept-alive connections, parsed by httptools.

A general-purpose client costs the proxy more per request than the upstream's own server does; this one does
only what a pass-through needs: send the request as one write, hand back the status, the headers as sent and
the body to a sink as it arrives (chunked transfer decoded), and put the connection back for the next
request. Until the sink is there, at most HIGH_WATER bytes are buffered; then the sink brakes the socket
(pause, resume) while its own client is slow, so a slow client slows its upstream instead of filling memory.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 2**10  # bytes of a body read ahead of its reader
CONNECT_TIMEOUT = 30.0  # seconds


class UpstreamError(Exception):
    """The upstream could not be reached, or broke off or garbled its answer."""


class Response:
    """One upstream answer: status, reason and headers once they are in; the body read as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []  # as sent: order, case and repeats kept
        self._fields: dict[str, str] = {}  # by lower-case name, for look-ups
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._done: asyncio.Future[None] | None = None

    def header(self, name: str) -> str | None:
        return self._fields.get(name.lower())

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self) -> bytes:
        """The whole body; raises UpstreamError if the upstream breaks off."""
        pieces: list[bytes] = []
        await self.relay(pieces.append)
        return b"".join(pieces)

    def relay(self, sink: Callable[[bytes], None]) -> asyncio.Future[None]:
        """Hand the body to `sink` piece by piece from the connection's own callbacks, as each piece arrives
        (no task switch per piece, which is most of what a streamed answer costs a proxy). The future is
        done at the body's end, or fails with UpstreamError. `pause` and `resume` are the sink's brake."""
        self._done = self._connection.loop.create_future()
        if self._chunks:  # what came in with the head
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            self._connection.resume()
            sink(data)
        self._sink = sink
        if self._error is not None or self._complete:
            self._settle()
        return self._done

    def pause(self) -> None:
        if not self._complete and self._error is None:  # once whole, the connection may carry another answer
            self._connection.pause()

    def resume(self) -> None:
        if not self._complete and self._error is None:
            self._connection.resume()

    def close(self) -> None:
        """Give up on the rest of the body: its connection cannot carry another request."""
        if not self._complete and self._error is None:
            self._connection.close()

    def _push(self, data: bytes) -> None:
        if self._sink is not None:
            try:
                self._sink(data)
            except Exception as exc:  # the sink's own failure ends this answer, and its connection
                self._connection.close()
                self._end(exc)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= HIGH_WATER:
            self._connection.pause()

    def _end(self, error: BaseException | None = None) -> None:
        self._complete, self._error = error is None, error
        self._settle()

    def _settle(self) -> None:
        if self._done is None or self._done.done():
            return
        if self._error is not None:
            self._done.set_exception(UpstreamError(str(self._error)))
        elif self._complete:
            self._done.set_result(None)


class _Connection(asyncio.Protocol):
    """One kept-alive connection: a request at a time, its answer parsed as it comes in."""

    def __init__(self, pool: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.loop = loop  # kept: asyncio.get_running_loop() is a getpid() system call per use
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: Response | None = None
        self._headers_in: asyncio.Future[Response] | None = None
        self._head_only = False
        self._delimited = True  # the answer's end is marked (length, chunks), not the connection's close
        self._paused = False
        self.closed = False
        self.received = False  # any byte of the current answer

    # The request side.
    def send(self, request: bytes, head_only: bool) -> asyncio.Future[Response]:
        assert self._transport is not None
        self._response = Response(self)
        self._head_only = head_only
        self.received = False
        self._headers_in = self.loop.create_future()
        self._transport.write(request)
        return self._headers_in

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP transport, whichever loop made it

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the upstream's answer is not HTTP: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and self._headers_in is not None and self._headers_in.done() and not self._delimited:
            self._finish()  # a body that ends when the connection does
        else:
            self._fail(UpstreamError(f"the upstream closed the connection{f': {exc}' if exc else ''}"))

    # httptools callbacks.
    def on_status(self, reason: bytes) -> None:
        assert self._response is not None
        self._response.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:  # httptools joins a header's pieces first
        assert self._response is not None
        self._response.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None and self._headers_in is not None
        response.status = self._parser.get_status_code()
        response._fields = {name.lower(): value for name, value in response.headers}
        length = response.header("content-length")
        chunked = "chunked" in (response.header("transfer-encoding") or "").lower()
        self._delimited = length is not None or chunked or response.status in (204, 304)
        if not self._headers_in.done():
            self._headers_in.set_result(response)
        if self._head_only:
            self._finish(reusable=False)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._push(body)

    def on_message_complete(self) -> None:
        self._finish(reusable=self._parser.should_keep_alive())

    def _finish(self, reusable: bool = False) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        response._end()
        if reusable and not self.closed:
            self.resume()
            self._pool._release(self)
        else:
            self.close()

    def _fail(self, error: UpstreamError) -> None:
        response, self._response = self._response, None
        if self._headers_in is not None and not self._headers_in.done():
            self._headers_in.set_exception(error)
        if response is not None:
            response._end(error)


async def _answer_on(connection: _Connection, request: bytes, head_only: bool) -> Response:
    try:
        return await connection.send(request, head_only)
    except asyncio.CancelledError:  # the client left: this connection would carry an answer nobody reads
        connection.close()
        raise


class Upstream:
    """Requests to one upstream base URL (`http://host:port/prefix` or https), over a pool of idle
    connections that grows with the concurrency asked of it."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http:// or https:// URL, got {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._idle: deque[_Connection] = deque()

    async def request(
        self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        """Send a request for `path` (under the base URL's own path); its Host and Content-Length are set here."""
        target = f"{self._prefix}/{path.lstrip('/')}" + (f"?{query}" if query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._authority}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        while self._idle:  # a kept-alive connection may have been closed by the upstream while idle
            connection = self._idle.pop()
            if connection.closed:
                continue
            try:
                return await _answer_on(connection, request, method == "HEAD")
            except UpstreamError:
                if connection.received:
                    raise  # the upstream began to answer: sending again could run the request twice
        return await _answer_on(await self._connect(), request, method == "HEAD")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        return connection

    def _release(self, connection: _Connection) -> None:
        self._idle.append(connection)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
