"""Errors that reach the user as a message with a stable code, never as a traceback.

Codes: E1xx spec, E2xx graph/cache, E3xx stages, E4xx teacher, E5xx gates.
"""

from __future__ import annotations


class DistillcError(Exception):
    """An error the user can act on: `code` is stable, `message` says what and where."""

    def __init__(self, code: str, message: str, help: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.help = help

    def render(self) -> str:
        text = f"error[{self.code}]: {self.message}"
        if self.help:
            text += f"\n  help: {self.help}"
        return text


class SpecError(DistillcError):
    """The spec is invalid; carries every diagnostic found, not just the first."""

    def __init__(self, diagnostics: list, source: str, filename: str) -> None:

        self.diagnostics = diagnostics
        self.source = source
        self.filename = filename
        errors = sum(1 for d in diagnostics if d.severity == "error")
        super().__init__("E109", f"{filename}: {errors} error(s) in spec")

    def render(self) -> str:
        from distillc.spec.diagnostics import render_all

        return render_all(self.diagnostics, self.source, self.filename)


class GateFailed(DistillcError):
    """A quality or latency gate of the spec was not met; artifacts and the report are kept."""
