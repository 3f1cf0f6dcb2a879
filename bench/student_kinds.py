"""The kinds of student side by side on one label task: the decoder's variants and the linear student.

    python bench/student_kinds.py SPEC --out BUILD [--gold GOLD.jsonl --text-field text --label-field section]

builds SPEC with `student.candidates: [linear]` into BUILD (weights kept), then prints and writes
BUILD/kinds.json: each verified variant's kind, weights, score with its 95% interval, p50/p95 latency, model
MB, and the package MB it would ship as (its model folder plus the package's other files, both measured on
disk). With --gold, the teacher is a local OpenAI-compatible server that answers each input with its label
in GOLD.jsonl (e.g. bench/debian_sections.py's archive sections): a real task without a teacher's cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fake_teacher, run from anywhere


def kinds_spec(spec: Path, out: Path, base_url: str | None) -> Path:
    """SPEC with the linear candidate (and the gold teacher), written into `out` with its paths made absolute."""
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    source = data["inputs"].get("source")
    if source:
        source["path"] = str((spec.parent / source["path"]).resolve())
    data["student"]["candidates"] = ["linear"]
    if base_url:
        key = "DISTILLC_BENCH_KEY"
        data["teacher"] = {"model": "gold", "base_url": base_url, "api_key_env": key, "max_concurrency": 8}
    out.mkdir(parents=True, exist_ok=True)
    written = out / "kinds.yaml"
    written.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return written


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def side_by_side(build: Path) -> list[dict[str, Any]]:
    from distillc.artifacts.export import variant_dir

    report = json.loads((build / "report.json").read_text())
    export = next(build.glob("cache/export/*/exported.json")).parent
    package = build / "package"
    rest = folder_bytes(package) - folder_bytes(package / "model")  # runtime, manifest, Dockerfile, README...
    rows = []
    for v in report["verify"]["variants"]:
        model = folder_bytes(variant_dir(export, v["name"]))
        rows.append(
            {
                "variant": v["name"],
                "kind": v["kind"],
                "parameters": v["parameters"],
                "score": v["score"],
                "interval": v["interval"],
                "p50_ms": v["p50_ms"],
                "p95_ms": v["p95_ms"],
                "model_mb": round(model / 1e6, 3),
                "package_mb": round((model + rest) / 1e6, 2),
                "ships": v["name"] == report["gate"]["variant"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gold", type=Path, help="JSONL of inputs and their labels: the teacher's answers")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--label-field", default="section")
    args = parser.parse_args()

    from distillc import api
    from distillc.cli import verify_table

    with contextlib.ExitStack() as stack:
        base_url = None
        if args.gold:
            from tests.fake_teacher import FakeTeacher

            rows = map(json.loads, args.gold.open(encoding="utf-8"))
            gold = {r[args.text_field]: r[args.label_field] for r in rows}
            os.environ.setdefault("DISTILLC_BENCH_KEY", "local")
            base_url = stack.enter_context(FakeTeacher(lambda text: gold.get(text, ""))).base_url
        result = api.build(kinds_spec(args.spec, args.out, base_url), out=args.out, keep_weights=True)
    rows = side_by_side(args.out)
    (args.out / "kinds.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(verify_table(result.report["verify"], result.report["gate"]["variant"]))
    header = f"{'variant':<8} {'kind':<8} {'weights':>12} {'score':>6}  95% interval    p50 ms  p95 ms  model MB"
    print(f"\n{header}  package MB")
    for r in rows:
        low, high = r["interval"]
        print(
            f"{r['variant']:<8} {r['kind']:<8} {r['parameters']:>12,} {r['score']:>6.3f}  [{low:.3f}, {high:.3f}]  "
            f"{r['p50_ms']:>6.2f}  {r['p95_ms']:>6.2f}  {r['model_mb']:>8.3f}  {r['package_mb']:>10.2f}"
            + ("  <- ships" if r["ships"] else "")
        )


if __name__ == "__main__":
    main()
