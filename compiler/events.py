"""Progress events: stages emit them, a sink renders them (human lines, or JSON lines for machines)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TextIO


@dataclass
class Event:
    kind: str  # stage_start | stage_done | progress | info | warning
    stage: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


class Sink(Protocol):
    def __call__(self, event: Event) -> None: ...


class TextSink:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        prefix = {"warning": "warning: ", "stage_done": "done: "}.get(event.kind, "")
        print(f"[{event.stage}] {prefix}{event.message}", file=self.stream, flush=True)


class JsonSink:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        print(json.dumps(asdict(event), default=str), file=self.stream, flush=True)


def null_sink(event: Event) -> None:
    pass


def sink_for(log_format: str, stream: TextIO = sys.stderr) -> Sink:
    """`json` for machines; `text` (and `auto`) for people and CI logs."""
    return JsonSink(stream) if log_format == "json" else TextSink(stream)
