"""The gate: which verified variant ships, decided once, as an artifact the package stage reads.

A variant ships when it meets `evaluation.min_score`, stays within `export.max_quality_drop` of fp32 and,
measured on the target, within `deploy.latency_budget_ms`; of those, the smallest student's fastest
(distillc.quality.gates), whatever its kind.
With `deploy.cascade`, it must also have a confidence threshold that keeps the cascade's agreement (the
lowest one is chosen, distillc.quality.confidence).
When none does, the build stops here with the gate's reason, and the report keeps every measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.artifacts.gate import DECISION, Decision, write_decision
from distillc.artifacts.verify import read_verified
from distillc.build.runner import Stage, StageContext
from distillc.quality.gates import cascade_point, choose_variant


def run(ctx: StageContext, verify: Path) -> dict[str, Any]:
    verified = read_verified(verify)
    chosen = choose_variant(ctx.spec, verified)  # raises GateFailed when nothing can ship
    decision = Decision(
        variant=chosen, metric=verified["metric"], n=verified["n"], measured_with=verified["measured_with"]
    )
    cascade = cascade_point(ctx.spec, chosen) if ctx.spec.deploy.cascade is not None else None
    if cascade is not None:
        decision["cascade"] = cascade
        ctx.log(
            f"cascade: the student answers at confidence >= {cascade['threshold']:.4g} ({cascade['coverage']:.1%} "
            f"of held-out inputs, agreeing with the teacher on {cascade['agreement']:.1%}, 95% interval "
            f"[{cascade['interval'][0]:.3f}, {cascade['interval'][1]:.3f}]); {cascade['escalation']:.1%} go to the "
            "teacher"
        )
    write_decision(ctx.workdir, decision)
    shape = f"{chosen['layers']} layers" if chosen["kind"] == "decoder" else chosen["kind"]
    ctx.log(
        f"{chosen['name']} ships ({shape}, {chosen['parameters'] / 1e6:.1f}M weights): "
        f"{verified['metric']} {chosen['score']:.3f}, p95 {chosen['p95_ms']} ms"
    )
    return {
        "variant": chosen["name"],
        "kind": chosen["kind"],
        "parameters": chosen["parameters"],
        "layers": chosen["layers"],
        "score": chosen["score"],
        "p50_ms": chosen["p50_ms"],
        "p95_ms": chosen["p95_ms"],
    } | ({"cascade": cascade} if cascade is not None else {})


STAGE = Stage(
    name="gate",
    version=4,  # 4: deploy.cascade's threshold; 3: by weights, whatever the kind; 2: pruned candidates
    reads=(
        "evaluation.min_score",
        "evaluation.gate",
        "export.max_quality_drop",
        "deploy.latency_p50_ms",
        "deploy.latency_p95_ms",
        "deploy.cascade",
    ),
    needs=("verify",),
    produces=(DECISION,),
    run=run,
)
