"""Split labeled data into train and held-out sets, by a hash of each input: stable as data grows."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from distillc.artifacts import read_jsonl, write_jsonl
from distillc.errors import DistillcError
from distillc.runner import StageContext

NAME = "split"
VERSION = 1
READS = ("evaluation",)
NEEDS = ("label",)


def run(ctx: StageContext, label: Path) -> dict[str, Any]:
    rows = read_jsonl(label / "labeled.jsonl")
    if len(rows) < 4:
        raise DistillcError(
            "E301",
            f"only {len(rows)} labeled examples: too few to train and evaluate",
            help="add inputs to the source file",
        )
    ranked = sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
    n_holdout = min(len(rows) - 1, max(1, math.ceil(len(rows) * ctx.spec.evaluation.holdout)))
    holdout, train = ranked[:n_holdout], ranked[n_holdout:]
    order = {r["id"]: i for i, r in enumerate(rows)}  # keep the source order inside each split
    write_jsonl(ctx.workdir / "train.jsonl", sorted(train, key=lambda r: order[r["id"]]))
    write_jsonl(ctx.workdir / "holdout.jsonl", sorted(holdout, key=lambda r: order[r["id"]]))
    return {"train": len(train), "holdout": len(holdout)}
