"""Which exported variant ships: of the listed ones that meet the quality bar and the latency budget, the
smallest student's (fewest weights: a linear student before a pruned candidate before the full student), and
of its variants the fastest.

The quality bar is two gates: `evaluation.min_score`, and `export.max_quality_drop` below fp32's score
(a quantized variant that passes min_score but answers worse than fp32 does not ship). Every kind of student
is held to both: a linear student or a pruned one ships only within max_quality_drop of the decoder's fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.errors import GateFailed
from distillc.quality.confidence import agreement, choose_threshold
from distillc.spec.ir import SpecIR

GATED = {"point": "", "lower_bound": ", lower bound of its 95% interval"}  # what a message's figures are
# Scores are rounded to 6 places in the verify summary; a drop of exactly the limit passes.
TOLERANCE = 1e-9


def gated_score(spec: SpecIR, measured: dict[str, Any]) -> float:
    """What must reach min_score: the score, or with `evaluation.gate: lower_bound` its interval's lower bound."""
    return float(measured["interval"][0] if spec.evaluation.gate == "lower_bound" else measured["score"])


def min_score(spec: SpecIR, summary: dict[str, Any], build_dir: Path) -> None:
    """E501 when no student's held-out score (the evaluate stage's summary: the trained decoder's, and each
    candidate's, as PyTorch or scikit-learn answered) reaches min_score: nothing is exported for students
    that cannot pass."""
    minimum = spec.evaluation.min_score
    value = gated_score(spec, summary)
    others = summary.get("candidates", [])
    if value >= minimum or any(gated_score(spec, c) >= minimum for c in others):
        return
    also = "".join(f", {c['name']} {gated_score(spec, c):.3f}" for c in others)
    raise GateFailed(
        "E501",
        f"student {summary['metric']}{GATED[spec.evaluation.gate]} {value:.3f}{also} is below "
        f"evaluation.min_score {minimum} on {summary['n']} held-out inputs",
        help=f"see {build_dir / 'report.json'}; more inputs, more epochs or a larger student may help",
    )


def gap_to_teacher(spec: SpecIR, summary: dict[str, Any], build_dir: Path) -> None:
    """E507 when `evaluation.max_gap_to_teacher` is set and the student's score against the human labels is not
    surely within it of the teacher's (the lower bound of their paired difference's 95% interval); E508 when
    no held-out input has a human label to tell."""
    gap = spec.evaluation.max_gap_to_teacher
    if gap < 0:
        return
    gold = summary.get("gold")
    if not gold:
        raise GateFailed(
            "E508",
            "evaluation.max_gap_to_teacher needs held-out inputs with human labels, and none has one",
            help="give more inputs a gold label, or raise evaluation.holdout",
        )
    measured = gold["gap_to_teacher"]
    low = measured["interval"][0]
    if low + gap >= -TOLERANCE:
        return
    raise GateFailed(
        "E507",
        f"the student may score {-low:.3f} below the teacher against {gold['n']} human labels (student "
        f"{gold['student']['value']:.3f}, teacher {gold['teacher']['value']:.3f}; gap {measured['value']:+.3f}, "
        f"95% interval [{low:+.3f}, {measured['interval'][1]:+.3f}]), more than evaluation.max_gap_to_teacher {gap}",
        help=f"see {build_dir / 'report.json'}; more inputs, more epochs or a larger student may help; more gold "
        "labels narrow the interval",
    )


def choose_variant(spec: SpecIR, verify: dict[str, Any]) -> dict[str, Any]:
    """The variant to ship, or GateFailed naming what each variant missed."""
    minimum = spec.evaluation.min_score
    max_drop = spec.export.max_quality_drop
    listed = [v for v in verify["variants"] if v.get("listed", True)]
    good = [v for v in listed if gated_score(spec, v) >= minimum and v.get("drop", 0.0) <= max_drop + TOLERANCE]
    if not good:
        scores = ", ".join(f"{v['name']} {gated_score(spec, v):.3f}" for v in listed)
        below = [v for v in listed if gated_score(spec, v) >= minimum]
        if below:  # every variant that reached min_score fell too far below fp32
            drops = ", ".join(f"{v['name']} {v['drop']:.3f}" for v in below)
            raise GateFailed(
                "E505",
                f"every variant that reaches evaluation.min_score {minimum} scores more than "
                f"export.max_quality_drop {max_drop} below fp32 on {verify['n']} held-out inputs (drop: {drops})",
                help="add fp32 to export.quantization, or raise export.max_quality_drop if that loss is acceptable",
            )
        raise GateFailed(
            "E506",
            f"no exported variant reaches evaluation.min_score {minimum} on {verify['n']} held-out inputs "
            f"({verify['metric']}{GATED[spec.evaluation.gate]}: {scores})",
            help="fp32 matched the PyTorch student; quantized variants may score lower: try fp32, or more training",
        )
    budget = {"p50_ms": spec.deploy.latency_p50_ms, "p95_ms": spec.deploy.latency_p95_ms}
    if verify["measured_on_target"]:
        fast = [v for v in good if all(not limit or v[key] <= limit for key, limit in budget.items())]
        if not fast:
            measured = ", ".join(f"{v['name']} p50 {v['p50_ms']} / p95 {v['p95_ms']} ms" for v in good)
            raise GateFailed(
                "E504",
                f"no variant that meets min_score is within deploy.latency_budget_ms ({measured})",
                help="try export.quantization: [int8, int4], a smaller student, or student.prune",
            )
        good = fast
    if spec.deploy.cascade is not None:
        good = cascade_ready(spec, good, verify["n"])
    return min(good, key=lambda v: (v["parameters"], v["p95_ms"], v["p50_ms"]))


def cascade_point(spec: SpecIR, variant: dict[str, Any]) -> dict[str, Any] | None:
    """Where the variant's cascade hands over: the lowest confidence threshold whose agreement with the teacher
    on the inputs the student keeps is at least deploy.cascade.min_agreement at its interval's lower bound,
    keeping at least min_coverage; None when there is none. Measured on the variant as shipped (verify)."""
    cascade = spec.deploy.cascade
    assert cascade is not None
    point = choose_threshold(variant["confidence"]["curve"], cascade.min_agreement, cascade.min_coverage)
    return None if point is None else point | {"escalation": round(1 - point["coverage"], 6)}


def cascade_ready(spec: SpecIR, variants: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The variants a cascade can run on under deploy.cascade, or E509 saying how near each one came."""
    cascade = spec.deploy.cascade
    assert cascade is not None
    ready = [v for v in variants if cascade_point(spec, v) is not None]
    if ready:
        return ready
    near = []
    for variant in variants:
        curve = variant["confidence"]["curve"]
        kept = [p["coverage"] for p in curve if p["interval"][0] >= cascade.min_agreement]
        wide = [p for p in curve if p["coverage"] >= cascade.min_coverage]
        at_min = max(wide, key=lambda p: p["threshold"])["interval"][0] if wide else 0.0
        near.append(
            f"{variant['name']}: {'at most ' + format(max(kept), '.0%') if kept else 'no'} coverage at that bound; "
            f"at {cascade.min_coverage:.0%} coverage the bound is {at_min:.3f}"
        )
    raise GateFailed(
        "E509",
        f"no confidence threshold keeps deploy.cascade.min_agreement {cascade.min_agreement} (lower bound of the 95% "
        f"interval; agreeing: {agreement(spec).describe()}) with the student answering at least "
        f"min_coverage {cascade.min_coverage} of {n} held-out inputs ({'; '.join(near)})",
        help="lower min_agreement or min_coverage, or train a better student; more held-out inputs narrow the interval",
    )
