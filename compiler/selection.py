"""Which exported variant ships: the fastest that meets the quality bar and the latency budget."""

from __future__ import annotations

from typing import Any

from distillc.errors import GateFailed
from distillc.spec.ir import SpecIR


def choose_variant(spec: SpecIR, verify: dict[str, Any]) -> dict[str, Any]:
    """The variant to ship, or GateFailed naming what each variant missed."""
    minimum = spec.evaluation.min_score
    variants = verify["variants"]
    good = [v for v in variants if v["score"] >= minimum]
    if not good:
        scores = ", ".join(f"{v['name']} {v['score']:.3f}" for v in variants)
        raise GateFailed(
            "E501",
            f"no exported variant reaches evaluation.min_score {minimum} on {verify['n']} held-out inputs "
            f"({verify['metric']}: {scores})",
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
    return min(good, key=lambda v: (v["p95_ms"], v["p50_ms"]))
