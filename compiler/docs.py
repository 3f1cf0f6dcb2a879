"""README sections generated from code (error codes, the spec reference): one way to splice them in."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, start: str, end: str, body: str) -> None:
    """Replace what lies between the `start` and `end` marker lines of `path` with `body`."""
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")


def section(text: str, start: str, end: str) -> str:
    """What lies between the markers in `text` (as write_section wrote it)."""
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")
