"""Split labeled data into train and held-out sets by a hash of each input.

Each input's side depends on its own hash alone, so adding inputs never moves an existing one across:
held-out scores stay comparable as data grows. The held-out share is therefore close to, not exactly,
`evaluation.holdout`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.build.runner import Stage, StageContext
from distillc.data.split import unit_hash
from distillc.errors import DistillcError


def run(ctx: StageContext, label: Path) -> dict[str, Any]:
    rows = read_jsonl(label / "labeled.jsonl")
    if len(rows) < 4:
        raise DistillcError(
            "E303",
            f"only {len(rows)} labeled examples: too few to train and evaluate",
            help="add inputs, or raise inputs.generate.count",
        )
    share = ctx.spec.evaluation.holdout
    holdout = [r for r in rows if unit_hash(r["id"]) < share]
    train = [r for r in rows if unit_hash(r["id"]) >= share]
    if not holdout or not train:  # tiny data sets: move the extreme item so both sides exist
        ranked = sorted(rows, key=lambda r: unit_hash(r["id"]))
        holdout, train = ranked[:1], ranked[1:]
    write_jsonl(ctx.workdir / "train.jsonl", train)
    write_jsonl(ctx.workdir / "holdout.jsonl", holdout)
    return {"train": len(train), "holdout": len(holdout)}


STAGE = Stage(
    name="split",
    version=2,
    reads=("evaluation.holdout",),
    needs=("label",),
    produces=("train.jsonl", "holdout.jsonl"),
    run=run,
)
