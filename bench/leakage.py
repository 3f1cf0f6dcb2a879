"""Held-out inputs with a near-copy in training, in each of the repository's examples: split by each input's
own hash (as distillc did before near duplicates were grouped), and split by group (as it does now).

    python bench/leakage.py [--out leakage.json]

Each example's inputs are gathered as its build gathers them (`distillc build --until inputs`, offline: no
teacher is asked), then split as the split stage splits its labeled rows, with the example's held-out share:
once as written (`inputs.dedup: near`, the default, drops near duplicates before they reach the split), once
with `inputs.dedup: off` (as for traffic whose repeats should weigh). A last row is production-like traffic
made from the reviews: each review sent three times, under another order number and customer name.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distillc import api  # noqa: E402
from distillc.build.artifacts import iter_jsonl  # noqa: E402
from distillc.data.split import grouped_sides  # noqa: E402
from tests.conftest import edit_spec  # noqa: E402

SPECS = Path(__file__).resolve().parents[1] / "specs"


def leakage(spec: Path, changes: dict[str, object]) -> dict[str, object]:
    """Split the inputs of `spec` (with `changes` made to a copy of it) both ways."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / spec.name
        shutil.copy(spec, copy)
        (Path(folder) / "data").symlink_to(spec.parent / "data")
        edit_spec(copy, changes)
        result = api.build(copy, out=Path(folder) / "build", until="inputs")
        inputs = result.stage("inputs").artifact / "inputs.jsonl"
        texts = [(row["id"], row["input"]) for row in iter_jsonl(inputs)]
        held_out, grouping = grouped_sides(iter(texts), result.spec.evaluation.holdout, Path(folder))
    row = {"inputs": len(texts), "held_out": int(held_out.sum())}
    return row | {k: v for k, v in grouping.items() if k != "largest_group_examples"}


def templated_traffic(folder: Path) -> Path:
    """The reviews as a shop's support traffic: each one three times, another order and customer each time."""
    rng = random.Random(0)
    names = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana"]
    path = folder / "traffic.jsonl"
    with path.open("w") as out:
        for row in iter_jsonl(SPECS / "data" / "reviews.jsonl"):
            for _ in range(3):
                text = f"Order #{rng.randrange(10**5, 10**6)} ({rng.choice(names)}): {row['text']}"
                out.write(json.dumps({"text": text}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    heads = ("inputs", "groups", "grouped", "largest", "held out", "leaked before", "now")
    keys = ("inputs", "groups", "grouped_inputs", "largest_group", "held_out", "leaked_by_own_hash", "leaked")
    print(f"{'example':<52} " + " ".join(f"{h:>{max(7, len(h))}}" for h in heads))
    with tempfile.TemporaryDirectory() as scratch:
        cases = [(spec.name, spec, {}) for spec in sorted(SPECS.glob("*.yaml"))]
        cases += [(f"{spec.name}, dedup off", spec, {"inputs.dedup": "off"}) for spec in sorted(SPECS.glob("*.yaml"))]
        traffic = {"inputs.source": {"path": str(templated_traffic(Path(scratch))), "field": "text"}}
        cases.append(
            (
                "reviews as templated traffic, dedup off",
                SPECS / "review-sentiment.yaml",
                traffic | {"inputs.dedup": "off"},
            )
        )
        for name, spec, changes in cases:
            row = {"example": name} | leakage(spec, changes)
            rows.append(row)
            print(
                f"{name:<52} " + " ".join(f"{row[k]:>{max(7, len(h))}}" for k, h in zip(keys, heads, strict=True)),
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
