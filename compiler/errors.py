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


class GateFailed(DistillcError):
    """A quality or latency gate of the spec was not met; artifacts and the report are kept."""
