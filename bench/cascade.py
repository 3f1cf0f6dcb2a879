"""What a cascade would do for each built example: how well the shipped student's confidence ranks its
disagreements with the teacher, and what answering the sure share with the student, the rest with the
teacher, costs and takes, against the student alone and the teacher alone.

    distillc build specs/review-sentiment.yaml         # (and the other examples), then:
    python bench/cascade.py build/review-sentiment build/changelog-triage ... [--out cascade.json]

Everything comes from each build's report.json, measured by that build: the shipped variant's confidence
(verify: AUROC of each score, the coverage curve on held-out inputs), its latency distribution and cost per
1,000 requests, and the teacher's, measured while labeling. For each agreement target (0.95, 0.98, 0.99, as
measured on the share the student keeps, not its lower bound) the row gives that share (coverage), and the
cascade's p50 and cost per 1,000: every request pays the student, an escalated one the teacher too. A build
with `deploy.cascade` also shows the threshold its gate chose, with that agreement's 95% interval.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distillc.quality.confidence import at_agreement  # noqa: E402
from distillc.quality.latency import cascade_percentiles  # noqa: E402

TARGETS = (0.95, 0.98, 0.99)


def summary(build: Path) -> dict[str, Any]:
    report = json.loads((build / "report.json").read_text(encoding="utf-8"))
    head = report["headline"]
    shipped = next(v for v in report["verify"]["variants"] if v["name"] == report["gate"]["variant"])
    confidence = shipped["confidence"]
    teacher_q = (report["label"].get("teacher") or {}).get("latency_quantiles_ms") or []
    student_q = shipped.get("latency_quantiles_ms") or []
    student_usd, teacher_usd = head["student"]["usd_per_1k"], head["teacher"]["usd_per_1k"]
    rows = []
    for target in TARGETS:
        point = at_agreement(confidence["curve"], target)
        coverage = point["coverage"] if point else 0.0
        escalation = 1 - coverage
        latency = cascade_percentiles(student_q, teacher_q, escalation) if student_q and teacher_q else {}
        usd = student_usd + escalation * teacher_usd if student_usd is not None and teacher_usd is not None else None
        rows.append(
            {
                "agreement": target,
                "coverage": round(coverage, 4),
                "threshold": point["threshold"] if point else None,
                "p50_ms": latency.get("p50"),
                "usd_per_1k": None if usd is None else float(f"{usd:.4g}"),
            }
        )
    return {
        "build": str(build),
        "n": report["verify"]["n"],
        "variant": shipped["name"],
        "score": confidence["score"],
        "agrees_when": confidence.get("agreement", {}).get("described", "not recorded (built before agree_at)"),
        "auroc": confidence["auroc"],
        "agreement_all": confidence["curve"][-1]["agreement"] if confidence["curve"] else None,
        "student": {"p50_ms": head["student"]["p50_ms"], "usd_per_1k": student_usd},
        "teacher": {"p50_ms": head["teacher"]["p50_ms"], "usd_per_1k": teacher_usd},
        "at": rows,
        "chosen": head.get("cascade"),
    }


def show(result: dict[str, Any]) -> str:
    auroc = ", ".join(f"{k} {v if v is not None else '-'}" for k, v in result["auroc"].items())
    lines = [
        f"{result['build']}: {result['variant']}, {result['n']} held-out inputs, confidence {result['score']} "
        f"(AUROC {auroc}); agreement on all inputs {result['agreement_all']} (agreeing: {result['agrees_when']})",
        f"  student alone: p50 {result['student']['p50_ms']} ms, ${result['student']['usd_per_1k']} per 1,000; "
        f"teacher alone: p50 {result['teacher']['p50_ms']} ms, ${result['teacher']['usd_per_1k']} per 1,000",
    ]
    for row in result["at"]:
        lines.append(
            f"  agreement >= {row['agreement']}: student answers {row['coverage']:.1%} "
            f"(threshold {row['threshold']}), cascade p50 {row['p50_ms']} ms, ${row['usd_per_1k']} per 1,000"
        )
    if chosen := result["chosen"]:
        lines.append(
            f"  chosen by the gate: threshold {chosen['threshold']:.4g}, coverage {chosen['coverage']:.1%}, agreement "
            f"{chosen['agreement']:.3f} [{chosen['interval'][0]:.3f}, {chosen['interval'][1]:.3f}], p50 "
            f"{chosen['p50_ms']} ms, p95 {chosen['p95_ms']} ms, ${chosen['usd_per_1k']} per 1,000"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", type=Path, help="build folders (build/<name>) of built examples")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = [summary(build) for build in args.builds]
    for result in results:
        print(show(result))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
