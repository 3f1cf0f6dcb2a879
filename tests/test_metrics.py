"""Metrics by task type with 95% bootstrap intervals, checked by hand; degenerate answers; small held-out sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from distillc.quality import metrics
from distillc.quality.checks import degenerate, repeats, small_holdout
from distillc.spec.ir import ExampleIR, TaskIR
from distillc.task import label
from distillc.task.json_value import JsonValue
from distillc.task.label import label_metrics
from distillc.task.stats import mean_with_interval
from distillc.task.text import Text

json_metrics = JsonValue().scores
text_metrics = Text().scores
LABELS = TaskIR("Route.", (), "label", ("billing", "bug", "other"), "")


def test_a_two_input_interval_is_the_hand_computed_one() -> None:
    # Resamples of one right and one wrong answer score 0, 0.5 or 1 (probabilities 1/4, 1/2, 1/4):
    # the 2.5th and 97.5th percentiles are 0 and 1.
    assert mean_with_interval([1.0, 0.0]) == {"value": 0.5, "interval": [0.0, 1.0]}
    # Every answer right: every resample scores 1, so does the interval.
    assert mean_with_interval([1.0] * 30) == {"value": 1.0, "interval": [1.0, 1.0]}


def test_an_accuracy_interval_is_as_wide_as_the_normal_approximation_says() -> None:
    # 80 of 100 right: the normal approximation gives 0.8 +- 1.96 * sqrt(0.8 * 0.2 / 100) = +- 0.078.
    result = mean_with_interval([1.0] * 80 + [0.0] * 20)
    low, high = result["interval"]
    assert low < 0.8 < high and 0.065 < (high - low) / 2 < 0.09


def test_label_metrics_match_scikit_learn_and_a_hand_count() -> None:
    gold = ["billing", "billing", "bug", "bug", "other", "other", "billing", "bug"]
    pred = ["billing", "bug", "bug", "bug", "other", "billing", "billing", "nonsense"]
    result = label_metrics(LABELS, list(zip(gold, pred, strict=True)))
    # By hand: 5 of 8 right; billing answered 3 times, 2 right, of 3 billing inputs; bug the same; other
    # answered once, right, of 2 other inputs.
    billing, bug, other = (result["per_label"][x] for x in ("billing", "bug", "other"))
    assert result["accuracy"]["value"] == 0.625
    assert (billing["precision"], billing["recall"]) == (0.666667, 0.666667)
    assert (bug["precision"], bug["support"]) == (0.666667, 3)
    assert (other["precision"], other["recall"]) == (1.0, 0.5)
    assert result["confusion"]["labels"][-1] == label.OUTSIDE  # "nonsense" is counted, not dropped
    assert result["confusion"]["matrix"][1] == [0, 2, 0, 1]  # bug: twice bug, once outside the set
    # The vectorized statistic the intervals come from equals scikit-learn on the whole sample.
    labels = result["confusion"]["labels"]
    mapped = [p if p in LABELS.labels else label.OUTSIDE for p in pred]
    statistic = label._label_statistic(gold, mapped, labels, ["billing", "bug", "other"])
    point = statistic(np.arange(len(gold))[None], axis=-1)[:, 0]
    precision, recall, _, _ = precision_recall_fscore_support(gold, mapped, labels=labels, zero_division=0)
    expected = [accuracy_score(gold, mapped), f1_score(gold, mapped, labels=list(LABELS.labels), average="macro")]
    assert point == pytest.approx([*expected, *precision, *recall])
    for name in ("accuracy", "macro_f1"):
        low, high = result[name]["interval"]
        assert low <= result[name]["value"] <= high and high - low > 0.1  # 8 inputs: a wide interval


def test_json_metrics_count_parses_schema_and_fields() -> None:
    task = TaskIR("x", (), "json", (), '{"type": "object", "required": ["team"]}')
    pairs = [
        ('{"team": "a", "urgent": true}', '{"team": "a", "urgent": false}'),
        ('{"team": "b", "urgent": true}', '{"urgent": true}'),  # parses, fails the schema
        ('{"team": "c", "urgent": false}', "not json"),
        ('{"team": "d", "urgent": false}', '{"team": "d", "urgent": false}'),
    ]
    result = json_metrics(task, pairs)
    assert result["parses"]["value"] == 0.75 and result["schema_valid"]["value"] == 0.5
    assert result["exact_match"]["value"] == 0.25
    assert result["per_field"]["team"]["value"] == 0.5 and result["per_field"]["urgent"]["value"] == 0.5


def test_text_metrics_are_exact_match_chrf_and_rouge_l() -> None:
    result = text_metrics(TaskIR("x", (), "text", (), ""), [("the cat sat", "the cat sat"), ("a b c d", "a b x d")])
    assert result["exact_match"]["value"] == 0.5
    # ROUGE-L of "a b x d" against "a b c d": longest common subsequence 3 of 4 words each way, F1 0.75.
    assert result["rouge_l"]["value"] == pytest.approx((1.0 + 0.75) / 2)
    assert 0.5 < result["chrf"]["value"] < 1.0


def test_a_text_gate_on_chrf_or_rouge_l_scores_near_misses_that_exact_match_fails() -> None:
    task = TaskIR("x", (), "text", (), "")
    pairs = [("open a file as a stream", "open a file as stream"), ("count the items", "count the items")]
    assert metrics.gated(task, "exact_match", pairs)["value"] == 0.5
    for name in ("chrf", "rouge_l"):
        gate = metrics.gated(task, name, pairs)
        assert gate == text_metrics(task, pairs)[name] and 0.5 < gate["value"] < 1.0


def test_degenerate_answers_are_named() -> None:
    assert degenerate(LABELS, [("bug", "bug"), ("billing", "other")]) == []
    one_label = [("bug", "other"), ("billing", "other"), ("other", "other"), ("bug", "other")] * 3
    assert "the student answers 'other' for 12 of 12 inputs" in degenerate(LABELS, one_label)[0]
    text = TaskIR("x", (), "text", (), "")
    loop = "the end is near " * 8
    assert repeats(loop) and not repeats("a short and entirely ordinary answer with no loop in it at all")
    warnings = degenerate(text, [("x", ""), ("y", loop), ("z", "fine")])
    assert warnings == [
        "1 of 3 answers are empty",
        "1 of 3 answers repeat themselves (a phrase of 3 words makes up most of them)",
    ]


def test_a_small_held_out_set_is_named_with_how_many_inputs_would_do() -> None:
    small = mean_with_interval([1.0] * 16 + [0.0] * 3)  # 19 inputs, as the default spec holds out
    warning = small_holdout("accuracy", small, 19)
    assert warning is not None and "19 inputs" in warning and "held-out inputs would narrow it to ±0.05" in warning
    needed = int(warning.split("about ")[1].split(" ")[0])
    assert 100 < needed < 400
    large = mean_with_interval([1.0] * 950 + [0.0] * 50)
    assert small_holdout("accuracy", large, 1000) is None


def test_the_few_shot_baseline_prompt_shows_the_examples_as_the_teacher_sees_them(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from distillc.student.prompt import few_shot_prompt, prompt_text
    from distillc.task.prompts import system_prompt

    task = TaskIR("Route.", (ExampleIR("card declined", "billing"), ExampleIR("app crashes", "bug")), "label",
                  ("billing", "bug", "other"), "")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = prompt_text(few_shot_prompt(tokenizer, task, [0]), "love it")
    # The chat template's turns, in order: instructions, each example and its answer, then the input.
    at = 0
    for piece in (system_prompt(task), "card declined", "billing", "app crashes", "bug", "love it"):
        at = text.index(piece, at) + len(piece)  # each after the one before
    tokenizer.chat_template = None  # a model without a chat template gets a plain few-shot layout
    plain = prompt_text(few_shot_prompt(tokenizer, task, [0]), "love it")
    assert plain.endswith("Input: app crashes\nOutput: bug\n\nInput: love it\nOutput: ")
