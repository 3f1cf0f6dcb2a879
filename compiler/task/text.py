"""Text tasks: an answer is free text, decoded up to the token limit; scored by exact match, chrF (sacrebleu)
and ROUGE-L F1 (rouge-score), each the mean of per-answer scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distillc.task.base import Pairs, Problem, Starter, StudentTokens
from distillc.task.stats import mean_with_interval
from distillc_runtime.answers import Agreement

if TYPE_CHECKING:
    from distillc.spec.ir import TaskIR


class Text:
    name = "text"
    metrics = ("exact_match", "chrf", "rouge_l")
    output_fields: frozenset[str] = frozenset()
    starter = Starter(
        instructions="Rewrite the message as one short, polite sentence.",
        examples=(
            ("send me the report NOW it is late again", "Could you please send me the report as soon as possible?"),
            ("why is the build broken AGAIN??", "Could you let me know why the build is failing?"),
            ("meeting moved to 3, deal with it", "The meeting has been moved to 3 pm."),
        ),
        inputs=(
            "stop cc'ing me on these threads",
            "the coffee machine is broken fix it",
            "where are the slides i asked for yesterday",
            "your code broke production",
            "nobody answered my ticket in a week",
            "i need the budget numbers today",
            "who took my charger",
            "the invoice is wrong again",
            "call me back right now",
            "this document has typos everywhere",
        ),
        max_new_tokens=48,
    )

    def check(self, output: Any, examples: list[Any]) -> list[Problem]:
        return [
            Problem(
                "E111", f"example {i + 1}: a text example's output must be a string", ("task", "examples", i, "output")
            )
            for i, example in enumerate(examples)
            if not isinstance(example.output, str)
        ]

    def contract(self, task: TaskIR) -> str:
        return "Answer with the output only, no preamble."

    def accept(self, task: TaskIR, answer: str) -> tuple[str | None, str]:
        return answer.strip(), ""

    def endpoint_format(self, task: TaskIR) -> dict[str, Any]:
        return {}

    def choices(self, task: TaskIR) -> tuple[str, ...]:
        return ()

    def constraint(self, task: TaskIR, tokens: StudentTokens) -> dict[str, Any]:
        return {}

    def answer_check(self, task: TaskIR) -> dict[str, Any]:
        return {"nonempty": True}

    def agrees(self, task: TaskIR, expected: str, predicted: str) -> bool:
        return Agreement("text")(expected, predicted)

    def scores(self, task: TaskIR, pairs: Pairs) -> dict[str, Any]:
        return {metric: self.gated(task, metric, pairs) for metric in self.metrics}

    def gated(self, task: TaskIR, metric: str, pairs: Pairs) -> dict[str, Any]:
        if metric == "chrf":
            from sacrebleu.metrics import CHRF

            chrf = CHRF()
            return mean_with_interval([chrf.sentence_score(p, [e]).score / 100 for e, p in pairs])
        if metric == "rouge_l":
            from rouge_score import rouge_scorer

            rouge = rouge_scorer.RougeScorer(["rougeL"])
            return mean_with_interval([rouge.score(e, p)["rougeL"].fmeasure for e, p in pairs])
        return mean_with_interval([float(self.agrees(task, e, p)) for e, p in pairs])

    def degenerate(self, task: TaskIR, pairs: Pairs) -> list[str]:
        return []
