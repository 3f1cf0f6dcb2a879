"""Student-vs-teacher metrics by task type, each with a 95% bootstrap interval.

- label: accuracy, macro-F1 (over the labels the teacher used), per-label precision and recall, and the
  confusion matrix (scikit-learn);
- json: the share of answers that parse, that validate against the schema, that equal the teacher's, and
  per top-level field the share that equals the teacher's value;
- text: exact match, chrF (sacrebleu) and ROUGE-L F1 (rouge-score), each the mean of per-answer scores.

Intervals are percentile bootstraps over the held-out inputs (scipy.stats.bootstrap, 1,000 resamples, a
fixed seed): the resamples are drawn once and every metric is computed on each, vectorized, so the
interval costs milliseconds. For label metrics the statistic is computed from per-resample confusion
counts; on the whole sample it equals scikit-learn's figures (tested).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from distillc.quality.scoring import agrees
from distillc.spec.ir import TaskIR
from distillc.teacher.contract import normalize_label, schema_violation

Pairs = list[tuple[str, str]]  # (teacher answer, student answer)
RESAMPLES = 1000
SEED = 0
OUTSIDE = "(outside the label set)"


def interval(samples: np.ndarray, statistic: Any) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile-bootstrap bounds of `statistic(indices, axis)` over the rows of `samples`."""
    from scipy.stats import bootstrap

    n = len(samples)
    point = np.asarray(statistic(np.arange(n)[None], axis=-1))[..., 0]
    if n < 2:
        return point, point
    result = bootstrap(
        (np.arange(n),),
        statistic,
        vectorized=True,
        n_resamples=RESAMPLES,
        method="percentile",
        random_state=SEED,
    )
    low, high = result.confidence_interval
    return np.nan_to_num(np.asarray(low), nan=point), np.nan_to_num(np.asarray(high), nan=point)


def mean_with_interval(values: list[float]) -> dict[str, Any]:
    """The mean of per-answer scores and its interval."""
    array = np.asarray(values, dtype=float)
    if not len(array):
        return {"value": 0.0, "interval": [0.0, 0.0]}
    low, high = interval(array, lambda idx, axis: array[idx.astype(int)].mean(axis=axis))
    return {"value": round(float(array.mean()), 6), "interval": [round(float(low), 6), round(float(high), 6)]}


# -- label -------------------------------------------------------------------------------------------


def label_metrics(task: TaskIR, pairs: Pairs) -> dict[str, Any]:
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
    k = len(labels)
    g = np.asarray([labels.index(x) for x in gold])
    p = np.asarray([labels.index(x) for x in pred])
    averaged = np.asarray([labels.index(x) for x in used])

    def statistic(indices: np.ndarray, axis: int = -1) -> np.ndarray:
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


# -- json and text ---------------------------------------------------------------------------------------


def json_metrics(task: TaskIR, pairs: Pairs) -> dict[str, Any]:
    parsed, valid, exact = [], [], []
    fields: dict[str, list[float]] = {}
    for expected, predicted in pairs:
        want = _load(expected)
        got = _load(predicted)
        parsed.append(float(got is not _INVALID))
        ok = got is not _INVALID and not (task.json_schema and schema_violation(task.json_schema, got))
        valid.append(float(ok))
        exact.append(float(agrees(task, expected, predicted)))
        if isinstance(want, dict):
            for key, value in want.items():
                fields.setdefault(key, []).append(float(isinstance(got, dict) and got.get(key) == value))
    return {
        "parses": mean_with_interval(parsed),
        "schema_valid": mean_with_interval(valid),
        "exact_match": mean_with_interval(exact),
        "per_field": {key: mean_with_interval(values) for key, values in sorted(fields.items())},
    }


_INVALID = object()


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID


def text_metrics(task: TaskIR, pairs: Pairs) -> dict[str, Any]:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    rouge = rouge_scorer.RougeScorer(["rougeL"])
    return {
        "exact_match": exact_match(task, pairs),
        "chrf": mean_with_interval([chrf.sentence_score(p, [e]).score / 100 for e, p in pairs]),
        "rouge_l": mean_with_interval([rouge.score(e, p)["rougeL"].fmeasure for e, p in pairs]),
    }


def task_metrics(task: TaskIR, pairs: Pairs) -> dict[str, Any]:
    """Every metric that fits the task, each with its interval."""
    if task.output_type == "label":
        return label_metrics(task, pairs)
    if task.output_type == "json":
        return json_metrics(task, pairs)
    return text_metrics(task, pairs)


def exact_match(task: TaskIR, pairs: Pairs) -> dict[str, Any]:
    """The share of answers equal to the teacher's, as the task compares them (distillc.quality.scoring)."""
    return mean_with_interval([float(agrees(task, expected, predicted)) for expected, predicted in pairs])


def gated(task: TaskIR, metric: str, pairs: Pairs, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's metric, {"value", "interval"}: accuracy or macro-F1 for labels, chrF, ROUGE-L or exact match
    for text, exact match for JSON. Without `metrics` (all of task_metrics), only what the gate needs is computed."""
    if metrics is not None:
        return metrics[metric]
    if task.output_type == "label":
        return label_metrics(task, pairs)[metric]
    if metric in ("chrf", "rouge_l"):
        return text_metrics(task, pairs)[metric]
    return exact_match(task, pairs)
