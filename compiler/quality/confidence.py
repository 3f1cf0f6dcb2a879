"""How well an answer's confidence tells the student's good answers from its bad ones, and where a cascade
should hand over to the teacher.

Everything here is measured on held-out inputs, with the confidences of the variant as shipped (the
package's runtime, see distillc_runtime.confidence). "Agrees" is distillc_runtime.answers.Agreement, the one
the package's shadows count: equal labels or JSON values, and for text scored by chrf or rouge_l, a score of
at least evaluation.agree_at against the teacher's answer (exact equality would count nearly every summary a
disagreement, and send it to the teacher).

- AUROC: the chance that a random answer that agrees has a higher confidence than a random one that does
  not (scikit-learn's roc_auc_score); 0.5 ranks no better than chance. None when every answer agrees, or
  none does.
- The coverage curve: for each threshold (every confidence seen), the share of inputs the student would
  answer itself (confidence >= threshold) and its agreement on that share, with the 95% Wilson interval of
  that agreement (scipy's binomtest). Wilson rather than the bootstrap the metrics use: one interval per
  threshold, and a binomial proportion is exactly what each one is.
- The threshold: the lowest whose agreement's lower bound meets `min_agreement`, among those that keep at
  least `min_coverage` of the inputs with the student.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distillc_runtime.answers import Agreement
from distillc_runtime.confidence import SCORES

if TYPE_CHECKING:
    from distillc.spec.ir import SpecIR

LEVEL = 0.95  # of every interval here
PREFERRED = ("mean", "min", "sum")  # among scores that rank equally well, the first listed wins


def auroc(confidences: Sequence[float], agreed: Sequence[bool]) -> float | None:
    if len(set(agreed)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score([int(a) for a in agreed], list(confidences))), 6)


def choose_score(scores: dict[str, Sequence[float]], agreed: Sequence[bool]) -> tuple[str, dict[str, float | None]]:
    """The score whose confidences rank the disagreements best, and each one's AUROC. `scores`: score name
    (of SCORES) -> each answer's confidence under it. With no disagreement to rank, the first preferred."""
    measured = {how: auroc(scores[how], agreed) for how in PREFERRED if how in scores}
    ranked = [how for how in PREFERRED if measured.get(how) is not None]
    if not ranked:
        return next(how for how in PREFERRED if how in measured), measured
    best = max(measured[how] or 0.0 for how in ranked)
    return next(how for how in ranked if measured[how] == best), measured


def wilson(agree: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of `agree` successes in `n`."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    interval = binomtest(agree, n).proportion_ci(confidence_level=LEVEL, method="wilson")
    return float(interval.low), float(interval.high)


def coverage_curve(confidences: Sequence[float], agreed: Sequence[bool]) -> list[dict[str, Any]]:
    """One point per distinct confidence, highest first: answering every input at or above `threshold`
    covers `answered` of them, of which `agree` agree with the teacher."""
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    points: list[dict[str, Any]] = []
    agree = 0
    for rank, i in enumerate(order):
        answered = rank + 1
        agree += bool(agreed[i])
        last_of_its_value = answered == len(order) or confidences[order[rank + 1]] != confidences[i]
        if last_of_its_value:  # a threshold answers all inputs of its confidence, or none of them
            low, high = wilson(agree, answered)
            points.append(
                {
                    "threshold": confidences[i],
                    "answered": answered,
                    "agree": agree,
                    "coverage": round(answered / len(order), 6),
                    "agreement": round(agree / answered, 6),
                    "interval": [round(low, 6), round(high, 6)],
                }
            )
    return points


def choose_threshold(curve: Sequence[dict[str, Any]], min_agreement: float, min_coverage: float) -> dict | None:
    """The curve's point with the lowest threshold whose agreement, at its interval's lower bound, is at
    least `min_agreement`, and whose coverage is at least `min_coverage`; None when there is none."""
    meets = [point for point in curve if point["interval"][0] >= min_agreement and point["coverage"] >= min_coverage]
    return min(meets, key=lambda point: point["threshold"]) if meets else None


def at_agreement(curve: Sequence[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The widest coverage whose agreement (as measured, not its bound) is at least `target`: for tables."""
    meets = [point for point in curve if point["agreement"] >= target]
    return max(meets, key=lambda point: point["coverage"]) if meets else None


def agreement(spec: SpecIR) -> Agreement:
    """When the spec counts a student answer as agreeing with the teacher's."""
    return Agreement(spec.task.output_type, spec.evaluation.metric, spec.evaluation.agree_at)


def confidence_summary(
    rows: Sequence[dict[str, Any]], agrees: Agreement, candidates: Sequence[str] = SCORES
) -> dict[str, Any]:
    """For one variant's answered held-out rows (each with verify's `scores`, the teacher's answer `expected`
    and the student's `output`): the chosen score among `candidates` (a label task has one: its label's
    probability, `sum`), each one's AUROC, and the coverage curve under the chosen score."""
    agreed = [agrees(row["expected"], row["output"]) for row in rows]
    scores = {how: [row["scores"][how] for row in rows] for how in candidates}
    chosen, measured = choose_score(scores, agreed)
    curve = coverage_curve(scores[chosen], agreed)
    return {
        "agreement": {"metric": agrees.metric, "at_least": agrees.at_least, "described": agrees.describe()},
        "score": chosen,
        "auroc": measured,
        "curve": curve,
        "coverage_at": {str(t): (at_agreement(curve, t) or {}).get("coverage", 0.0) for t in (0.95, 0.98, 0.99)},
    }
