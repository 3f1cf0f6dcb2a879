"""Split labeled data into train and held-out sets by a hash of each input.

Each input's side depends on its own hash alone, so adding inputs never moves an existing one across:
held-out scores stay comparable as data grows. The held-out share is therefore close to, not exactly,
`evaluation.holdout`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.build.runner import Stage, StageContext
from distillc.data.split import unit_hash
from distillc.errors import DistillcError


def run(ctx: StageContext, label: Path) -> dict[str, Any]:
    """One pass, row by row: memory holds no rows, whatever their number."""
    share = ctx.spec.evaluation.holdout
    counts = {"train": 0, "holdout": 0}
    with (
        (label / "labeled.jsonl").open(encoding="utf-8") as rows,
        (ctx.workdir / "train.jsonl").open("w", encoding="utf-8") as train,
        (ctx.workdir / "holdout.jsonl").open("w", encoding="utf-8") as holdout,
    ):
        for line in rows:
            if line.strip():
                side = "holdout" if unit_hash(json.loads(line)["id"]) < share else "train"
                (holdout if side == "holdout" else train).write(line if line.endswith("\n") else line + "\n")
                counts[side] += 1
    total = counts["train"] + counts["holdout"]
    if total < 4:
        raise DistillcError(
            "E303",
            f"only {total} labeled examples: too few to train and evaluate",
            help="add inputs, or raise inputs.generate.count",
        )
    if not counts["holdout"] or not counts["train"]:  # a tiny data set: move the extreme item so both sides exist
        ranked = sorted(read_jsonl(label / "labeled.jsonl"), key=lambda r: unit_hash(r["id"]))
        counts = {"train": write_jsonl(ctx.workdir / "train.jsonl", ranked[1:])}
        counts["holdout"] = write_jsonl(ctx.workdir / "holdout.jsonl", ranked[:1])
    return counts


STAGE = Stage(
    name="split",
    version=3,  # 3: rows are copied as labeling wrote them, in one streaming pass
    reads=("evaluation.holdout",),
    needs=("label",),
    produces=("train.jsonl", "holdout.jsonl"),
    run=run,
)
