"""Diagnostics in the style of ruff: `file:line:col: error[CODE] message`, source line, caret, help."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from distillc.errors import DistillcError
from distillc.redact import redact


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    start: int  # character offset into the source; line:col is derived only when rendering
    end: int
    severity: str = "error"  # error | warning
    help: str | None = None
    mask: bool = False  # the spanned text may be a secret: never print it


MAX_LINE = 160  # characters of a source line a diagnostic quotes


def line_col(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, col


def render(diag: Diagnostic, source: str, filename: str) -> str:
    """The diagnostic with its source line; anything key-like in either is masked (distillc.redact)."""
    return redact(_render(diag, source, filename))


def _render(diag: Diagnostic, source: str, filename: str) -> str:
    if not source:  # the file could not be read: there is no line to point at
        return f"{filename}: {diag.severity}[{diag.code}] {diag.message}"
    line, col = line_col(source, diag.start)
    lines = source.splitlines() or [""]
    text = lines[line - 1] if line - 1 < len(lines) else ""
    width = max(1, min(diag.end, diag.start + len(text) - col + 1) - diag.start)
    if diag.mask:
        text = text[: col - 1] + "*" * 4 + text[col - 1 + width :]
        width = 4
    if len(text) > MAX_LINE:  # a megabyte-long line is shown around the column, not whole
        start = max(0, col - 1 - MAX_LINE // 2)
        text = ("…" if start else "") + text[start : start + MAX_LINE] + "…"
        col, width = col - start + (1 if start else 0), min(width, MAX_LINE // 2)
    gutter = " " * len(str(line))
    out = [
        f"{filename}:{line}:{col}: {diag.severity}[{diag.code}] {diag.message}",
        f"{gutter} |",
        f"{line} | {text}",
        f"{gutter} | {' ' * (col - 1)}{'^' * width}",
    ]
    if diag.help:
        out.append(f"{gutter} = help: {diag.help}")
    return "\n".join(out)


def sort_key(diag: Diagnostic) -> tuple[int, str]:
    return (diag.start, diag.code)


def render_all(diagnostics: list[Diagnostic], source: str, filename: str) -> str:
    return "\n\n".join(render(d, source, filename) for d in sorted(diagnostics, key=sort_key))


def to_json(diagnostics: list[Diagnostic], source: str, filename: str) -> str:
    rows = []
    for d in sorted(diagnostics, key=sort_key):
        line, col = line_col(source, d.start)
        rows.append({"file": filename, "line": line, "column": col, **asdict(d)})
    return redact(json.dumps(rows, indent=2))


class SpecError(DistillcError):
    """The spec is invalid; carries every diagnostic found, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic], source: str, filename: str) -> None:
        self.diagnostics = diagnostics
        self.source = source
        self.filename = filename
        errors = sum(1 for d in diagnostics if d.severity == "error")
        super().__init__("E109", f"{filename}: {errors} error(s) in spec")

    def render(self) -> str:
        return render_all(self.diagnostics, self.source, self.filename)
