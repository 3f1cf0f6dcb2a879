"""What a stage may read of the spec: exactly what it declares, so its cache key covers its output.

A stage's key holds the spec fields it declares in its `reads` (less the `nokey()` ones, which cannot change
an output). `run()` gets a `SpecView` instead of the spec itself: reading any field outside them raises
`UndeclaredRead`, naming the stage and the field, so a forgotten read fails a test instead of serving a
stale artifact from the cache. Helpers a stage passes the view to (the TensorRT profile, the quality
gate) are held to the same reads.
"""

from __future__ import annotations

from typing import Any

from distillc.spec.ir import SpecIR


class UndeclaredRead(AttributeError):
    """A stage read a spec field it does not declare in its reads."""

    def __init__(self, stage: str, field: str) -> None:
        super().__init__(f"stage {stage!r} read spec field {field!r}, which is not in its reads")
        self.stage, self.field = stage, field


def covers(reads: tuple[str, ...], path: str) -> bool:
    """Whether reading `path` is within a declared read (the field itself or a field holding it)."""
    return any(path == r or path.startswith(r + ".") for r in reads)


def leads_to(reads: tuple[str, ...], path: str) -> bool:
    """Whether `path` holds a declared read: reading it is only a step towards that read."""
    return any(r.startswith(path + ".") for r in reads)


class SpecView:
    """A read-only view of `value` (the spec, or a part of it at `path`) that checks every field read."""

    def __init__(self, value: Any, stage: str, reads: tuple[str, ...], path: str = "") -> None:
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        path = f"{self._path}.{name}" if self._path else name
        if name == "slice" and not self._path:
            return self._slice
        if covers(self._reads, path):
            return getattr(self._value, name)
        if leads_to(self._reads, path):
            return SpecView(getattr(self._value, name), self._stage, self._reads, path)
        raise UndeclaredRead(self._stage, path)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the spec is read-only")

    def _slice(self, dotted: str) -> Any:
        value: Any = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return value

    def __repr__(self) -> str:
        return f"SpecView({self._stage}: {self._path or 'spec'})"


def stage_view(spec: SpecIR, stage: str, reads: tuple[str, ...]) -> SpecIR:
    """The spec as `stage` may see it (typed as the spec: stages and helpers read it the same way)."""
    return SpecView(spec, stage, reads)  # type: ignore[return-value]
