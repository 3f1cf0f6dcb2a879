"""The label task's linear student (`student.candidates: [linear]`): TF-IDF features and logistic regression,
fit on the teacher-labeled training rows, exported to ONNX, and proven to answer as scikit-learn does.

Evaluate scores it on the held-out inputs beside the decoder, export lists it, verify measures it as the
package runs it, and the gate ships it when it is the smallest student that passes (distillc.quality.gates).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distillc.artifacts.linear import LINEAR, NAME, LinearStudent, model_dir, predictions_path, write_linear
from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError

PARITY = 1e-4  # probabilities of the graph and of scikit-learn may differ by float32 rounding, not more


def run(ctx: StageContext, split: Path) -> dict[str, Any]:
    from distillc.student import linear  # scikit-learn: loaded when the stage runs, not when a spec is checked

    if "linear" not in ctx.spec.student.candidates:
        write_linear(ctx.workdir, None)
        return {"student": None}
    train = read_jsonl(split / "train.jsonl")
    holdout = read_jsonl(split / "holdout.jsonl")
    if len({r["output"] for r in train}) < 2:
        ctx.emit(Event("warning", ctx.stage, "the training rows hold one label only: no linear student"))
        write_linear(ctx.workdir, None)
        return {"student": None}
    started = time.perf_counter()
    pipeline, chosen = linear.fit(
        [r["input"] for r in train], [r["output"] for r in train], ctx.spec.evaluation.metric, ctx.spec.student.seed
    )
    fit_seconds = time.perf_counter() - started
    out = model_dir(ctx.workdir)
    graph_bytes = linear.write_model(pipeline, out)
    texts = [r["input"] for r in holdout]
    answers, probabilities = linear.predict(pipeline, texts)
    difference = parity(out, texts, answers, probabilities, linear.classes(pipeline))
    write_jsonl(
        predictions_path(ctx.workdir),
        [
            {"id": r["id"], "input": r["input"], "expected": r["output"], "output": a}
            for r, a in zip(holdout, answers, strict=True)
        ],
    )
    made = LinearStudent(
        name=NAME,
        parameters=linear.parameters(pipeline),
        features=linear.features(pipeline),
        C=float(chosen["C"]),
        cv_score=chosen["cv_score"],
        folds=chosen["folds"],
        rows=len(train),
        fit_seconds=round(fit_seconds, 3),
        parity_max_abs=difference,
    )
    write_linear(ctx.workdir, made)
    ctx.log(
        f"linear student: {made['features']} features, C {made['C']:g} (cross-validated {made['cv_score']}), "
        f"{graph_bytes / 1e3:.0f} KB; ONNX within {difference:.1e} of scikit-learn on {len(texts)} held-out inputs"
    )
    return {"student": made, "bytes": graph_bytes}


def parity(model: Path, texts: list[str], answers: list[str], probabilities: Any, classes: list[str]) -> float:
    """The graph, run as the package runs it, against scikit-learn: E316 unless every label is the same and
    every probability within PARITY. Returns the largest probability difference."""
    import numpy as np

    from distillc_runtime.linear import LinearClassifier

    runtime = LinearClassifier(model)
    labels, graph_probabilities = runtime.probabilities(texts)
    differ = [i for i, (a, b) in enumerate(zip(labels, answers, strict=True)) if a != b]
    largest = float(np.abs(np.asarray(graph_probabilities) - probabilities).max()) if texts else 0.0
    if differ or largest > PARITY or runtime.labels != classes:
        i = differ[0] if differ else None
        first = f" (first: {texts[i][:80]!r}: {answers[i]!r} vs {labels[i]!r})" if i is not None else ""
        raise DistillcError(
            "E316",
            f"the linear student's ONNX graph answers otherwise than scikit-learn on {len(differ)} of {len(texts)} "
            f"held-out inputs, probabilities up to {largest:.1e} apart{first}",
            help="remove `linear` from student.candidates, and report it with the build's logs",
        )
    return round(largest, 9)


STAGE = Stage(
    name="linear",
    version=1,
    reads=("task", "evaluation.metric", "student.candidates", "student.seed"),
    needs=("split",),
    produces=(LINEAR,),
    run=run,
)
