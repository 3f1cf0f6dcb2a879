"""Split labeled data into train and held-out sets by near-duplicate group, then by a hash.

Near duplicates (distillc.data.dedup: character 5-gram Jaccard of THRESHOLD or more, found by MinHash) are
grouped, directly or through each other, and a group's side follows from the hash of its first input's id:
every member falls on the same side, so no held-out input has a near-copy in training to make the gate look
better than the student is (production traffic is full of them: one template, another order number). An
input with no near duplicate keeps the side of its own hash, so adding inputs moves few existing ones
across, and held-out scores stay comparable as data grows. The held-out share is close to, not exactly,
`evaluation.holdout`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.build.artifacts import iter_jsonl, read_jsonl, write_jsonl
from distillc.build.runner import Stage, StageContext
from distillc.data.split import grouped_sides, unit_hash
from distillc.errors import DistillcError


def run(ctx: StageContext, label: Path) -> dict[str, Any]:
    """Two passes over the rows: the first groups them (memory: about 24 bytes a row), the second writes them."""
    labeled = label / "labeled.jsonl"
    texts = ((row["id"], row["input"]) for row in iter_jsonl(labeled))
    held_out, grouping = grouped_sides(texts, ctx.spec.evaluation.holdout, ctx.workdir)
    counts = {"train": 0, "holdout": 0}
    with (
        labeled.open("rb") as rows,
        (ctx.workdir / "train.jsonl").open("wb") as train,
        (ctx.workdir / "holdout.jsonl").open("wb") as holdout,
    ):
        n = 0
        for line in rows:
            if line.strip():
                side = "holdout" if held_out[n] else "train"
                (holdout if side == "holdout" else train).write(line if line.endswith(b"\n") else line + b"\n")
                counts[side] += 1
                n += 1
    total = counts["train"] + counts["holdout"]
    if total < 4:
        raise DistillcError(
            "E303",
            f"only {total} labeled examples: too few to train and evaluate",
            help="add inputs, or raise inputs.generate.count",
        )
    if not counts["holdout"] or not counts["train"]:  # a tiny data set: move the extreme item so both sides exist
        ranked = sorted(read_jsonl(labeled), key=lambda r: unit_hash(r["id"]))
        counts = {"train": write_jsonl(ctx.workdir / "train.jsonl", ranked[1:])}
        counts["holdout"] = write_jsonl(ctx.workdir / "holdout.jsonl", ranked[:1])
    if grouping["groups"]:
        ctx.log(
            f"{grouping['grouped_inputs']} inputs in {grouping['groups']} near-duplicate groups (largest "
            f"{grouping['largest_group']}), each on one side; split by each input's own hash, "
            f"{grouping['leaked_by_own_hash']} held-out inputs would have had a near-copy in training"
        )
    return counts | grouping


STAGE = Stage(
    name="split",
    version=4,  # 4: near duplicates are grouped, and a group falls on one side
    reads=("evaluation.holdout",),
    needs=("label",),
    produces=("train.jsonl", "holdout.jsonl"),
    run=run,
)
