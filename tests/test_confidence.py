"""An answer's confidence, how well it ranks the student's disagreements with its teacher, and the threshold a
cascade hands over at: each checked on arrays worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillc.quality.confidence import (
    auroc,
    choose_score,
    choose_threshold,
    confidence_summary,
    coverage_curve,
    wilson,
)
from distillc_runtime.answers import Agreement
from distillc_runtime.confidence import pick, score
from tests.helpers import curve_of


def test_scores_from_log_probabilities() -> None:
    logprobs = [math.log(0.5), math.log(0.8), math.log(1.0)]
    assert score(logprobs, "sum") == pytest.approx(0.4)
    assert score(logprobs, "mean") == pytest.approx(0.4 ** (1 / 3))
    assert score(logprobs, "min") == pytest.approx(0.5)
    assert score([], "mean") == 1.0  # nothing was decided
    with pytest.raises(ValueError, match="unknown confidence score 'max'"):
        score(logprobs, "max")


def test_pick_is_greedy_with_the_softmaxs_log_probability_and_ignores_forbidden_tokens() -> None:
    logits = np.array([1.0, 3.0, -np.inf, 2.0, 1000.0], dtype=np.float32)[[0, 1, 2, 3]]
    token, logprob, top = pick(logits, top=3)
    z = math.log(math.exp(1) + math.exp(3) + math.exp(2))
    assert token == 1 and logprob == pytest.approx(3 - z)
    assert [t for t, _ in top] == [1, 3, 0] and [lp for _, lp in top] == pytest.approx([3 - z, 2 - z, 1 - z])
    assert pick(np.array([5.0, -np.inf]), top=4)[2] == ((0, 0.0),)  # a forbidden token is no alternative
    assert pick(np.array([1e4, 0.0]))[1] == pytest.approx(0.0)  # no overflow on large logits


def test_auroc_by_hand() -> None:
    # Agreeing answers at 0.9 and 0.3, disagreeing at 0.8 and 0.2: 3 of the 4 (agree, disagree) pairs ranked right.
    assert auroc([0.9, 0.8, 0.3, 0.2], [True, False, True, False]) == 0.75
    assert auroc([0.9, 0.8], [True, True]) is None  # nothing to rank


def test_the_score_that_ranks_disagreements_best_is_chosen() -> None:
    agreed = [True, True, False, False]
    scores = {"mean": [0.9, 0.8, 0.7, 0.6], "min": [0.6, 0.7, 0.8, 0.9], "sum": [0.9, 0.5, 0.7, 0.1]}
    assert choose_score(scores, agreed) == ("mean", {"mean": 1.0, "min": 0.0, "sum": 0.75})
    scores["min"] = scores["mean"]  # a tie: the preferred order decides
    assert choose_score(scores, agreed)[0] == "mean"
    assert choose_score({"sum": [0.5, 0.5]}, [True, True]) == ("sum", {"sum": None})


def test_the_coverage_curve_counts_ties_together() -> None:
    curve = coverage_curve([0.9, 0.5, 0.5, 0.2], [True, True, False, False])
    assert [(p["threshold"], p["answered"], p["agree"], p["coverage"]) for p in curve] == [
        (0.9, 1, 1, 0.25),
        (0.5, 3, 2, 0.75),
        (0.2, 4, 2, 1.0),
    ]
    low, high = curve[1]["interval"]
    assert low < 2 / 3 < high


def test_wilson_interval_by_hand() -> None:
    # 9 of 10 at 95%: z = 1.959964; centre (p + z²/2n) / (1 + z²/n), half-width z/(1 + z²/n) sqrt(p(1-p)/n + z²/4n²).
    z, n, p = 1.959963984540054, 10, 0.9
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(9, 10) == pytest.approx((centre - half, centre + half))


def test_the_threshold_is_the_lowest_whose_lower_bound_meets_the_target() -> None:
    curve = curve_of([(0.95, 100, 100), (0.8, 400, 398), (0.6, 800, 784), (0.3, 1000, 930)], 1000)
    bounds = [round(p["interval"][0], 3) for p in curve]
    assert bounds == [0.963, 0.982, 0.968, 0.912]
    # 0.6 measures exactly 0.98, but its lower bound (0.968) does not: the bound moves the choice up to 0.8.
    assert curve[2]["agreement"] == 0.98
    assert choose_threshold(curve, 0.98, 0.05)["threshold"] == 0.8
    assert choose_threshold(curve, 0.96, 0.05)["threshold"] == 0.6
    # Not monotone: 100 of 100 (bound 0.963) misses 0.97 where 398 of 400 meets it.
    assert choose_threshold(curve, 0.97, 0.05)["threshold"] == 0.8
    assert choose_threshold(curve, 0.9, 0.05)["threshold"] == 0.3  # the student answers everything
    # A minimum coverage: 0.8 keeps only 40% with the student.
    assert choose_threshold(curve, 0.97, 0.5) is None
    assert choose_threshold(curve, 0.96, 0.5)["threshold"] == 0.6
    assert choose_threshold(curve, 0.999, 0.0) is None


def test_the_summary_of_a_label_variant_keeps_its_one_score() -> None:
    said = [("positive", "positive"), ("positive", "negative"), ("negative", "Negative"), ("negative", "neutral")]
    rows = [
        {"expected": e, "output": o, "scores": {"sum": c, "mean": 1 - c, "min": 0.5}}
        for (e, o), c in zip(said, (0.9, 0.8, 0.3, 0.2), strict=True)
    ]
    summary = confidence_summary(rows, Agreement("label"), candidates=("sum",))
    assert summary["score"] == "sum" and summary["auroc"] == {"sum": 0.75}
    assert [p["threshold"] for p in summary["curve"]] == [0.9, 0.8, 0.3, 0.2]
    assert summary["coverage_at"]["0.95"] == 0.25  # only the first answer keeps agreement >= 0.95
