"""The stage list, as literal data: the order a build runs in and what each stage needs.

The list is checked when it is imported: names unique, every need an earlier stage, every read a field
of the spec. What a stage reads while it runs is checked too (distillc.spec.view).
"""

from __future__ import annotations

import dataclasses
import types
import typing

from distillc.build.runner import Stage
from distillc.spec.ir import SpecIR
from distillc.stages import evaluate, export, gate, inputs, label, package, split, train, verify

STAGES = (
    inputs.STAGE,
    label.STAGE,
    split.STAGE,
    train.STAGE,
    evaluate.STAGE,
    export.STAGE,
    verify.STAGE,
    gate.STAGE,
    package.STAGE,
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def resolves(dotted: str, root: type = SpecIR) -> bool:
    """Whether `dotted` names a field of the spec (through nested records, and Optional ones)."""
    kind: typing.Any = root
    for part in dotted.split("."):
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if not (dataclasses.is_dataclass(kind) and part in {f.name for f in dataclasses.fields(kind)}):
            return False
        kind = typing.get_type_hints(kind)[part]
    return True


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
        if not stage.produces:
            raise ValueError(f"stage {stage.name!r} declares no output")
        seen.add(stage.name)


check(STAGES)
