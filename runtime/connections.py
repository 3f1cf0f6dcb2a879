"""Connections that have not sent a whole request cannot hold the server: uvicorn's HTTP/1.1 protocol with
deadlines and a connection cap.

uvicorn closes a keep-alive connection that goes quiet after a response, but has no deadline before the
first request, none for headers or a body sent a byte at a time, and its `limit_concurrency` counts idle
sockets, so 400 silent connections made it answer 503 to everyone, health probes included. Here:

- a request must arrive whole within `header_timeout_s` of the connection opening (or of the last
  response), plus one second for every `min_body_rate` bytes its Content-Length declares; past that the
  connection is closed (with a 408 when part of a request had come);
- at most `max_connections` connections are kept open: a new one closes the connection that has waited
  longest without sending a whole request, so a flood of idle or slow clients cannot lock out a real one;
  only when every connection holds a request being answered is the new one turned away (503);
- a connection whose request is whole is never closed by these rules: the request's own deadline
  (`request_timeout_s`, server.py) bounds it.

Chosen by measurement over uvicorn's own settings and over hypercorn's read timeout, which is per read
(a body dripped a byte every 3 s stayed open past 45 s) and has no connection cap: see the project
README. uvicorn stays the server the package is measured with; its h11 protocol is pinned by the lock.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
FULL = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
RESERVED_FILES = 64  # descriptors left for the model, logs and the runtime itself


class Limits:
    """The guard's settings, from the package's deploy block."""

    def __init__(self, deploy: dict[str, Any]) -> None:
        self.header_timeout_s = float(deploy.get("header_timeout_s", 5.0))
        self.min_body_rate = float(deploy.get("min_body_rate", 1024.0))  # bytes per second
        self.max_connections = connection_cap(int(deploy.get("max_connections", 1024)))


def connection_cap(wanted: int) -> int:
    """`wanted`, or fewer when the process may not open that many files: the soft limit is raised to the
    hard one first, as servers do, since a container's default soft limit (1,024) is lower than a flood."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - RESERVED_FILES))


def guarded_protocol(limits: Limits) -> type[H11Protocol]:
    """uvicorn's `http=` protocol class, bound to these limits."""

    class Guarded(GuardedH11Protocol):
        pass

    Guarded.limits = limits
    return Guarded


class GuardedH11Protocol(H11Protocol):
    limits: Limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        crowded = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_since = time.monotonic()
        self.received = False  # part of the current request has arrived
        if crowded and not self.make_room():
            transport.write(FULL)
            transport.close()
            return
        self.arm(self.limits.header_timeout_s)

    def make_room(self) -> bool:
        """Close the connection that has waited longest without a whole request; False when there is none."""
        waiting = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol) and c.waiting]
        if not waiting:
            return False
        min(waiting, key=lambda c: c.waiting_since).expire()
        return True

    @property
    def waiting(self) -> bool:
        """No whole request is being answered on this connection."""
        busy = self.cycle is not None and not self.cycle.response_complete and self.conn.their_state is h11.DONE
        return not busy and not self.transport.is_closing()

    def arm(self, seconds: float) -> None:
        self.disarm()
        self.deadline = self.loop.call_later(seconds, self.expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def expire(self) -> None:
        """Too slow, or displaced by a newer connection: close, saying so when a request had begun."""
        self.disarm()
        if self.transport.is_closing():
            return
        if self.received and (self.cycle is None or self.cycle.response_complete or not self.cycle.response_started):
            self.transport.write(TIMED_OUT)  # part of a request came and no response began: say why
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.received = True
        had_headers = self.cycle is not None and not self.cycle.response_complete
        super().data_received(data)
        if self.transport.is_closing() or self.cycle is None or self.cycle.response_complete:
            return
        if self.conn.their_state is h11.DONE:  # the whole request is in: its own deadline applies now
            self.disarm()
        elif not had_headers and self.deadline is not None:  # headers just came: give the body its time
            declared = dict(self.cycle.scope["headers"]).get(b"content-length", b"0")
            length = int(declared) if declared.isdigit() else 0
            remaining = self.deadline.when() - self.loop.time()
            self.arm(max(remaining, 0) + length / self.limits.min_body_rate)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # keep-alive: the next request gets a fresh deadline
            self.waiting_since = time.monotonic()
            self.received = False
            self.arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        super().connection_lost(exc)
