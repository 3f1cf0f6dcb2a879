"""Progress events: stages emit them, a sink renders them (human lines, or JSON lines for machines)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TextIO

from distillc.redact import redact


@dataclass
class Event:
    kind: str  # stage_start | stage_done | progress | info | warning | error (the last, from the command)
    stage: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


class Sink(Protocol):
    def __call__(self, event: Event) -> None: ...


class Progress:
    """Counts finished items and emits `progress` events with the rate, the ETA and the dollars spent,
    at most every `every_s` seconds (and once more at the end)."""

    def __init__(
        self,
        emit: Sink,
        stage: str,
        total: int,
        what: str,
        spent: Callable[[], float] | None = None,
        every_s: float = 0.5,
    ) -> None:
        self.emit, self.stage, self.total, self.what = emit, stage, total, what
        self.spent = spent
        self.every_s = every_s
        self.done = 0
        self.started = self.last = time.monotonic()

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            self._emit(now)

    def finish(self) -> None:
        if self.done != self.total:  # stopped early (budget, failure): say where
            self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        usd = self.spent() if self.spent else 0.0
        message = f"{self.done}/{self.total} {self.what} · {rate:.1f}/s · ETA {_duration(eta)} · ${usd:.4f}"
        data = {"done": self.done, "total": self.total, "rate_per_s": round(rate, 3), "usd": round(usd, 6)}
        data["eta_s"] = None if eta is None else round(eta, 1)
        self.emit(Event("progress", self.stage, message, data))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class TextSink:
    """Lines for people. On a terminal, progress redraws one line in place (a live bar); in a log,
    progress prints at most every `log_every_s` seconds so CI output stays readable."""

    def __init__(self, stream: TextIO = sys.stderr, log_every_s: float = 10.0) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.log_every_s = log_every_s
        self._open_line = False
        self._last_progress = float("-inf")  # the first progress line always prints

    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            self._progress(event)
            return
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        prefix = {"warning": "warning: ", "stage_done": "done: "}.get(event.kind, "")
        # Messages can quote what others wrote (an endpoint's error body): anything key-like is masked.
        print(redact(f"[{event.stage}] {prefix}{event.message}"), file=self.stream, flush=True)

    def _progress(self, event: Event) -> None:
        line = f"[{event.stage}] {_bar(event.data)}{event.message}"
        if self.live:
            self.stream.write(f"\r\x1b[2K{line}")
            self.stream.flush()
            self._open_line = True
            return
        final = event.data.get("done") is not None and event.data.get("done") == event.data.get("total")
        if final or event.time - self._last_progress >= self.log_every_s:
            self._last_progress = event.time
            print(line, file=self.stream, flush=True)


def _bar(data: dict[str, Any], width: int = 20) -> str:
    done, total = data.get("done"), data.get("total")
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
        return ""
    filled = round(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + "] "


class JsonSink:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        print(redact(json.dumps(asdict(event), default=str)), file=self.stream, flush=True)


def null_sink(event: Event) -> None:
    pass


def sink_for(log_format: str, stream: TextIO = sys.stderr) -> Sink:
    """`json` for machines; `text` (and `auto`) for people and CI logs."""
    return JsonSink(stream) if log_format == "json" else TextSink(stream)
