"""How an answer is read as the task's contract defines it, the same in the build and in the package: the build
holds its teacher to it (distillc.task), and a package's cascade holds the teacher it hands requests to
(cascade.py). Models often wrap what they write in a Markdown fence, and put a label in a JSON object or a
sentence; these say what counts.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

_PUNCT = re.compile(r"[^\w\s-]+")


def strip_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence; the content is what counts."""
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def normalize_label(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text).lower().split())


def match_label(labels: tuple[str, ...], text: str) -> tuple[str | None, str]:
    wanted = normalize_label(text)
    by_norm = {normalize_label(label): label for label in labels}
    if wanted in by_norm:
        return by_norm[wanted], ""
    words = f" {wanted} "
    mentioned = [label for norm, label in by_norm.items() if f" {norm} " in words]
    if len(mentioned) == 1:
        return mentioned[0], ""
    return None, f"answer is not one of the labels: {text[:200]!r}"


def label_field(text: str) -> str | None:
    """The label in a structured answer, `{"label": "..."}` (distillc.task.label.label_format); None when the
    answer is plain text, as from an endpoint that ignores or refused the schema."""
    if not text.startswith(("{", "```")):
        return None
    try:
        value = json.loads(strip_fence(text))
    except ValueError:
        return None
    label = value.get("label") if isinstance(value, dict) else None
    return label if isinstance(label, str) else None


# A text answer "agrees" with the teacher's when it says nearly the same, by the task's metric: exact equality
# would send nearly every summary to the teacher. These equal sacrebleu's sentence chrF (default settings) and
# rouge_score's ROUGE-L F-measure (no stemming), which the build's gate uses; the package carries neither.
GRADED = ("chrf", "rouge_l")
_CHRF_ORDER, _CHRF_BETA = 6, 2
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def chrf(hypothesis: str, reference: str) -> float:
    """Character n-gram F-score (n = 1..6, beta 2, whitespace ignored), in [0, 1]."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    precision = recall = 0.0
    orders = 0
    for n in range(1, _CHRF_ORDER + 1):
        hyp_grams = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        ref_grams = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        hyp_total, ref_total = sum(hyp_grams.values()), sum(ref_grams.values())
        if hyp_total and ref_total:  # orders longer than either text do not count (sacrebleu's effective order)
            match = sum((hyp_grams & ref_grams).values())
            precision += match / hyp_total
            recall += match / ref_total
            orders += 1
    if not orders or not precision + recall:
        return 0.0
    precision, recall = precision / orders, recall / orders
    factor = _CHRF_BETA**2
    return (1 + factor) * precision * recall / (factor * precision + recall)


def rouge_l(hypothesis: str, reference: str) -> float:
    """F-measure of the longest common subsequence of lower-cased alphanumeric words, in [0, 1]."""
    hyp, ref = _ROUGE_TOKEN.findall(hypothesis.lower()), _ROUGE_TOKEN.findall(reference.lower())
    if not hyp or not ref:
        return 0.0
    previous = [0] * (len(hyp) + 1)
    for word in ref:
        current = [0]
        for j, other in enumerate(hyp):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    common = previous[-1]
    if not common:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def graded(output_type: str, metric: str) -> bool:
    """Whether answers of this type, under this metric, agree by a score rather than by being equal."""
    return output_type == "text" and metric in GRADED


@dataclass(frozen=True)
class Agreement:
    """When a student's answer agrees with the teacher's: the same label, equal JSON values, the same text, or,
    for text under a graded `metric`, a score of at least `at_least` against the teacher's."""

    output_type: str  # label | json | text
    metric: str = "exact_match"  # or, for text, one of GRADED
    at_least: float = 1.0

    def __call__(self, teacher: str, student: str) -> bool:
        if self.output_type == "label":
            return normalize_label(teacher) == normalize_label(student)
        if self.output_type == "json":
            try:
                return bool(json.loads(teacher) == json.loads(student))
            except ValueError:
                return False
        if graded(self.output_type, self.metric):
            score = chrf if self.metric == "chrf" else rouge_l
            return score(student, teacher) >= self.at_least
        return teacher.strip() == student.strip()

    def describe(self) -> str:
        if graded(self.output_type, self.metric):
            return f"{self.metric} >= {self.at_least:g} against the teacher's answer"
        return "equal to the teacher's answer"
