"""The stage list, as literal data: the order a build runs in and what each stage needs.

The list is checked when it is imported: names unique, every need an earlier stage, every read a field
of the spec. What a stage reads while it runs is checked too (distillc.spec.view).
"""

from __future__ import annotations

import dataclasses
import types
import typing

from distillc.build.runner import Stage
from distillc.quality import gates
from distillc.spec.ir import SpecIR
from distillc.stages import evaluate, export, gate, inputs, label, linear, package, prune, split, train, verify

STAGES = (
    inputs.STAGE,
    label.STAGE,
    split.STAGE,
    linear.STAGE,
    train.STAGE,
    prune.STAGE,
    # E501, E507: no export for a student below the bar, or surely further below the teacher than allowed
    dataclasses.replace(evaluate.STAGE, checks=(gates.min_score, gates.gap_to_teacher)),
    export.STAGE,
    verify.STAGE,
    gate.STAGE,
    package.STAGE,
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def spec_field(dotted: str, root: type = SpecIR) -> dataclasses.Field | None:
    """The spec field `dotted` names (through nested records, and Optional ones), or None."""
    kind: typing.Any = root
    found = None
    for part in dotted.split("."):
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        fields = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
        if part not in fields:
            return None
        found = fields[part]
        kind = typing.get_type_hints(kind)[part]
    return found


def resolves(dotted: str, root: type = SpecIR) -> bool:
    """Whether `dotted` names a field of the spec."""
    return spec_field(dotted, root) is not None


def check(stages: tuple[Stage, ...]) -> None:
    """Raise on a stage list that could not build correctly."""
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"stage {stage.name!r} is listed twice")
        if late := [n for n in stage.needs if n not in seen]:
            raise ValueError(f"stage {stage.name!r} needs {late}, which do not run before it")
        if bad := [r for r in stage.reads if not resolves(r)]:
            raise ValueError(f"stage {stage.name!r} reads {bad}, which are not fields of the spec")
        # A field kept out of keys (nokey) that a stage reads by name would serve stale artifacts when changed.
        if unkeyed := [r for r in stage.reads if not spec_field(r).metadata.get("cache", True)]:  # type: ignore[union-attr]
            raise ValueError(f"stage {stage.name!r} reads {unkeyed}, which are kept out of cache keys")
        if not stage.produces:
            raise ValueError(f"stage {stage.name!r} declares no output")
        seen.add(stage.name)


check(STAGES)
