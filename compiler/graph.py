"""The stage list, as literal data: the order a build runs in and what each stage needs."""

from __future__ import annotations

from distillc.stages import evaluate, export, inputs, label, package, split, train, verify

STAGES = (inputs, label, split, train, evaluate, export, verify, package)
STAGE_NAMES = tuple(s.NAME for s in STAGES)
