"""Are the answers worth training on? The distribution of the labeled answers, counted before training.

A teacher (or the production model whose answers were imported) can be degenerate: one that answers "unknown"
to most inputs trains a student that says "unknown", and the gate passes, because the student agrees with
its teacher. So labeling counts, for every task type: the share of the most common answer, of empty answers,
and of answers repeated verbatim across inputs (each input is distinct: exact repeats were dropped). For a text
or JSON task, one answer over `evaluation.max_answer_share` warns, and fails a `distillc build --strict`.

Counting is Misra-Gries' heavy hitters over TRACKED counters: memory stays fixed however many answers there
are, and each count is low by at most answers / TRACKED, so shares are lower bounds within 0.01%.
"""

from __future__ import annotations

from typing import Any

TRACKED = 10_000
SHOWN = 200  # characters of the most common answer in the report


class AnswerTally:
    def __init__(self) -> None:
        self.total = 0
        self.empty = 0
        self.counts: dict[str, int] = {}

    def add(self, answer: str) -> None:
        self.total += 1
        text = answer.strip()
        if not text:
            self.empty += 1
        if text in self.counts:
            self.counts[text] += 1
        elif len(self.counts) < TRACKED:
            self.counts[text] = 1
        else:  # every counter drops by one, and those at zero make room (Misra-Gries)
            self.counts = {k: c - 1 for k, c in self.counts.items() if c > 1}

    def summary(self) -> dict[str, Any]:
        if not self.total:
            return {"answers": 0}
        top, count = max(self.counts.items(), key=lambda kv: kv[1]) if self.counts else ("", 0)
        repeated = sum(c for c in self.counts.values() if c > 1)
        return {
            "answers": self.total,
            "most_common": top[:SHOWN],
            "most_common_share": round(count / self.total, 4),
            "empty_share": round(self.empty / self.total, 4),
            "repeated_share": round(repeated / self.total, 4),  # answers given, verbatim, to more than one input
        }


def degenerate(kind: str, summary: dict[str, Any], max_share: float) -> str | None:
    """Why the answers of a text or JSON task are not worth training on, or None. A label task's answers are
    a few labels by design: their distribution is reported, not judged."""
    share = summary.get("most_common_share", 0.0)
    if kind == "label" or share <= max_share:
        return None
    return (
        f"one answer covers {share:.0%} of the {summary['answers']} labeled inputs (evaluation.max_answer_share "
        f"{max_share:g}): {summary['most_common']!r}; a student trained on it learns to say it, and agreeing "
        "with its teacher, passes the gate"
    )
