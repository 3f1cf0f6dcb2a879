"""Label tasks: every answer is one of a fixed set of labels.

The teacher is held to the set by a one-field JSON schema (and asked again when it strays); its scores over
the labels are soft labels; the student decodes over the labels' token sequences only; the metrics are
accuracy, macro-F1 over the labels the teacher used, per-label precision and recall, and the confusion matrix.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from distillc.errors import DistillcError
from distillc.task.base import Pairs, Problem, Starter, StudentTokens
from distillc.task.stats import interval, mean_with_interval
from distillc_runtime.answers import Agreement, label_field, match_label, normalize_label

if TYPE_CHECKING:
    from distillc.spec.ir import TaskIR

OUTSIDE = "(outside the label set)"
ONE_LABEL_SHARE = 0.9  # a student giving one label this often, where the teacher did not, has collapsed


def label_format(labels: tuple[str, ...]) -> dict[str, Any]:
    """A strict JSON schema whose one field must be one of the labels: OpenAI's structured outputs take an
    object at the root, and vLLM and llama.cpp servers take the same `response_format`."""
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }
    return {"name": "label", "strict": True, "schema": schema}


def label_sequences(answer_ids: Any, labels: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Each label with the tokens it is trained as (`answer_ids(text)`): what constrained decoding chooses
    among."""
    return [{"text": label, "ids": answer_ids(label)} for label in labels]


class Label:
    name = "label"
    metrics = ("accuracy", "macro_f1", "exact_match")
    output_fields = frozenset({"labels"})
    starter = Starter(
        instructions="Route the support ticket to the team that should handle it.",
        output={"labels": "[billing, technical, account, other]"},
        examples=(
            ("I was charged twice for my March invoice.", "billing"),
            ("The app crashes every time I open the settings page.", "technical"),
            ("How do I change the email address on my profile?", "account"),
            ("Do you have an office in Lisbon?", "other"),
        ),
        inputs=(
            "My card was declined but the money still left my account.",
            "Export to PDF has been broken since the last update.",
            "I forgot my password and the reset email never arrives.",
            "Can I get a refund for the unused months of my plan?",
            "The dashboard takes a full minute to load.",
            "Please delete my account and all my data.",
            "Are you hiring engineers this year?",
            "Why is there a currency conversion fee on my bill?",
            "Sync stopped working between my phone and laptop.",
            "I want to add a second admin to our workspace.",
            "Do you offer discounts for non-profits?",
            "The search returns no results even for exact titles.",
        ),
    )

    def check(self, output: Any, examples: list[Any]) -> list[Problem]:
        labels = output.labels or []
        out = []
        if len(labels) < 2:
            out.append(
                Problem(
                    "E110",
                    "output type 'label' needs 'labels' with at least two entries",
                    ("task", "output"),
                    at="key",
                    help="e.g. labels: [positive, negative]",
                )
            )
        if dupes := sorted({x for x in labels if labels.count(x) > 1}):
            out.append(Problem("E110", f"duplicate labels: {', '.join(dupes)}", ("task", "output", "labels")))
        for i, example in enumerate(examples):
            problem = None
            if not isinstance(example.output, str):
                problem = "a label example's output must be a string"
            elif labels and example.output not in labels:
                problem = f"output '{example.output}' is not one of the labels ({', '.join(labels)})"
            if problem:
                out.append(Problem("E111", f"example {i + 1}: {problem}", ("task", "examples", i, "output")))
        return out

    def contract(self, task: TaskIR) -> str:
        return f"Answer with exactly one of these labels and nothing else: {', '.join(task.labels)}."

    def accept(self, task: TaskIR, answer: str) -> tuple[str | None, str]:
        text = answer.strip()
        return match_label(task.labels, label_field(text) or text)

    def endpoint_format(self, task: TaskIR) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": label_format(task.labels)}

    def choices(self, task: TaskIR) -> tuple[str, ...]:
        return task.labels

    def constraint(self, task: TaskIR, tokens: StudentTokens) -> dict[str, Any]:
        sequences = label_sequences(tokens.answer_ids, task.labels)
        seen: dict[tuple[int, ...], str] = {}
        for label in sequences:
            if (twin := seen.setdefault(tuple(label["ids"]), label["text"])) != label["text"]:
                raise DistillcError(
                    "E313",
                    f"labels {twin!r} and {label['text']!r} are the same tokens to the student's tokenizer",
                    help="rename one of them in task.output.labels",
                )
        return {"labels": sequences}

    def answer_check(self, task: TaskIR) -> dict[str, Any]:
        return {"one_of": list(task.labels)}

    def agrees(self, task: TaskIR, expected: str, predicted: str) -> bool:
        return Agreement("label")(expected, predicted)

    def scores(self, task: TaskIR, pairs: Pairs) -> dict[str, Any]:
        return label_metrics(task, pairs)

    def gated(self, task: TaskIR, metric: str, pairs: Pairs) -> dict[str, Any]:
        if metric == "exact_match":
            return mean_with_interval([float(self.agrees(task, e, p)) for e, p in pairs])
        return label_metrics(task, pairs)[metric]

    def degenerate(self, task: TaskIR, pairs: Pairs) -> list[str]:
        n = len(pairs)
        if not n:
            return []
        label, count = Counter(p for _, p in pairs).most_common(1)[0]
        teacher = Counter(e for e, _ in pairs).most_common(1)[0][1]
        if count / n >= ONE_LABEL_SHARE and teacher / n < ONE_LABEL_SHARE:
            return [
                f"the student answers {label!r} for {count} of {n} inputs; the teacher's most common label "
                f"covers {teacher}"
            ]
        return []


def label_metrics(task: TaskIR, pairs: Pairs) -> dict[str, Any]:
    """Accuracy and macro-F1 with intervals from per-resample confusion counts (on the whole sample they
    equal scikit-learn's figures), per-label precision and recall, and the confusion matrix."""
    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    by_form = {normalize_label(x): x for x in task.labels}
    gold = [by_form.get(normalize_label(e), OUTSIDE) for e, _ in pairs]
    pred = [by_form.get(normalize_label(p), OUTSIDE) for _, p in pairs]
    used = sorted(set(gold), key=list(task.labels + (OUTSIDE,)).index)  # macro-F1 averages over these
    labels = [*task.labels, *([OUTSIDE] if OUTSIDE in gold + pred else [])]
    precision, recall, _, support = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    stats = _label_statistic(gold, pred, labels, used)
    low, high = interval(np.arange(len(pairs)), stats)
    bounds = {name: [round(float(low[i]), 6), round(float(high[i]), 6)] for i, name in enumerate(_names(labels))}
    per_label = {
        label: {
            "precision": round(float(precision[i]), 6),
            "precision_interval": bounds[f"precision:{label}"],
            "recall": round(float(recall[i]), 6),
            "recall_interval": bounds[f"recall:{label}"],
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "accuracy": {"value": round(float(accuracy_score(gold, pred)), 6), "interval": bounds["accuracy"]},
        "macro_f1": {
            "value": round(float(f1_score(gold, pred, labels=used, average="macro", zero_division=0)), 6),
            "interval": bounds["macro_f1"],
        },
        "per_label": per_label,
        "confusion": {"labels": labels, "rows": "teacher", "columns": "student",
                      "matrix": confusion_matrix(gold, pred, labels=labels).tolist()},
    }  # fmt: skip


def _names(labels: list[str]) -> list[str]:
    return ["accuracy", "macro_f1", *(f"precision:{x}" for x in labels), *(f"recall:{x}" for x in labels)]


def _label_statistic(gold: list[str], pred: list[str], labels: list[str], used: list[str]) -> Any:
    """statistic(indices, axis) -> [accuracy, macro-F1, precision per label, recall per label], from the
    confusion counts of each resample (rows of `indices`)."""
    import numpy as np

    k = len(labels)
    g = np.asarray([labels.index(x) for x in gold])
    p = np.asarray([labels.index(x) for x in pred])
    averaged = np.asarray([labels.index(x) for x in used])

    def statistic(indices: Any, axis: int = -1) -> Any:
        idx = np.asarray(indices, dtype=int).reshape(-1, indices.shape[-1])
        rows = idx.shape[0]
        cells = (np.arange(rows)[:, None] * k * k + g[idx] * k + p[idx]).ravel()
        counts = np.bincount(cells, minlength=rows * k * k).reshape(rows, k, k)
        hits = np.diagonal(counts, axis1=1, axis2=2)
        gold_n, pred_n = counts.sum(axis=2), counts.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(pred_n > 0, hits / pred_n, 0.0)
            recall = np.where(gold_n > 0, hits / gold_n, 0.0)
            f1 = np.where(2 * hits + (pred_n - hits) + (gold_n - hits) > 0,
                          2 * hits / (2 * hits + (pred_n - hits) + (gold_n - hits)), 0.0)  # fmt: skip
        accuracy = hits.sum(axis=1) / idx.shape[1]
        out = np.concatenate([accuracy[:, None], f1[:, averaged].mean(axis=1)[:, None], precision, recall], axis=1)
        return out.T.reshape(out.shape[1], *indices.shape[:-1])

    return statistic
