"""Score the trained student against the teacher on the held-out inputs (greedy, batch 1, as served).

A label task is decoded over its label set and a JSON task within its schema, as the package decodes
them (distillc_runtime.constrain), so the score is that of the answers users will get.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillc.artifacts import linear as linear_student
from distillc.artifacts.evaluate import candidate_predictions, predictions_path
from distillc.artifacts.prune import read_candidates
from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.quality.checks import degenerate, small_holdout
from distillc.quality.metrics import gated, task_metrics
from distillc.quality.reference import reference_pairs, versus_gold
from distillc.spec.ir import TaskIR
from distillc.student.models import load_causal_lm, quiet_transformers
from distillc.student.prompt import few_shot_prompt, input_limit, load_prompt, prompt_ids
from distillc.task import task_type

if TYPE_CHECKING:
    from distillc.student.decode import Decoder


def run(ctx: StageContext, split: Path, train: Path, prune: Path, linear: Path) -> dict[str, Any]:
    task = ctx.spec.task
    rows = read_jsonl(split / "holdout.jsonl")
    predictions, decoder, prompt = predict(ctx, train / "model", rows)
    labels, grammar = decoder.labels, decoder.grammar
    write_jsonl(predictions_path(ctx.workdir), predictions)
    metric, reference = ctx.spec.evaluation.metric, ctx.spec.evaluation.reference
    pairs = [(p["expected"], p["output"]) for p in predictions]
    metrics = task_metrics(task, pairs)
    outputs = [p["output"] for p in predictions]
    scored = reference_pairs(reference, rows, outputs)  # what min_score is measured on
    gate = gated(task, metric, pairs, metrics) if reference == "teacher" else gated(task, metric, scored)
    ctx.log(
        f"{metric} {gate['value']:.3f}, 95% interval [{gate['interval'][0]:.3f}, {gate['interval'][1]:.3f}], "
        f"on {len(scored)} held-out inputs" + (" against their human labels" if reference == "gold" else "")
    )
    warnings = degenerate(task, pairs)
    if small := small_holdout(metric, gate, len(pairs)):
        warnings.append(small)
    limit = ctx.spec.deploy.max_new_tokens
    cut_short = sum(1 for p in predictions if len(p["output_ids"]) >= limit and not p["agrees"])
    if cut_short:
        # A JSON answer cut off by the token limit cannot parse: say so, rather than leave a low score unexplained.
        warnings.append(
            f"{cut_short} answers reached deploy.max_new_tokens ({limit}) unfinished; raise it if they were cut"
        )
    for warning in warnings:
        ctx.emit(Event("warning", ctx.stage, warning))
    misses = [{k: p[k] for k in ("input", "expected", "output")} for p in predictions if not p["agrees"]][:10]
    majority = majority_baseline(task, metric, read_jsonl(split / "train.jsonl"), rows)
    base, base_answers = few_shot_baseline(ctx, decoder, rows, prompt["eos_token_ids"])
    said = {"student": outputs, "majority": [majority["answer"]] * len(rows), "few_shot_base": base_answers}
    if (gold := versus_gold(task, metric, rows, said)) is not None:
        ctx.log(
            f"against {gold['n']} human labels: student {gold['student']['value']:.3f}, teacher "
            f"{gold['teacher']['value']:.3f}, gap {gold['gap_to_teacher']['value']:+.3f} "
            f"[{gold['gap_to_teacher']['interval'][0]:+.3f}, {gold['gap_to_teacher']['interval'][1]:+.3f}]"
        )
    return {
        "reference": reference,
        "decoding": "label-constrained" if labels else "json-schema-constrained" if grammar else "greedy",
        "cut_short": cut_short,
        "metric": metric,
        "score": gate["value"],
        "interval": gate["interval"],
        "metrics": metrics,
        "baselines": {"majority": majority, "few_shot_base": base},  # against the teacher
        "gold": gold,
        "warnings": warnings,
        "n": len(scored),
        "disagreements": misses,
        "candidates": [
            *(evaluate_candidate(ctx, c, rows, predictions) for c in read_candidates(prune)),
            *evaluate_linear(ctx, linear, predictions),
        ],
    }


def predict(
    ctx: StageContext, model_dir: Path, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], Decoder, dict[str, Any]]:
    """The student's answers to `rows`, decoded as the package decodes them, each with its tokens; the decoder
    and the student's prompt, which the baselines reuse."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillc.student.decode import Decoder

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = load_prompt(model_dir)
    task = ctx.spec.task
    decoder = Decoder(
        task, tokenizer, model_dir / "tokenizer.json", model.config.vocab_size, ctx.spec.deploy.max_new_tokens
    )
    limit = input_limit(ctx.spec.deploy.max_input_tokens, prompt)  # the package's: a refused input fails here too
    predictions = []
    for row in rows:
        refused = len(prompt_ids(tokenizer, prompt, row["input"])) > limit
        new, text = ([], "") if refused else decoder.reply(model, prompt, row["input"])
        predictions.append(
            {
                "id": row["id"],
                "input": row["input"],
                "expected": row["output"],
                "output": text,
                "output_ids": new,
                "agrees": not refused and task_type(task).agrees(task, row["output"], text),
                **({"refused": True} if refused else {}),
                **({"gold": row["gold"]} if "gold" in row else {}),
            }
        )
    return predictions, decoder, prompt


def evaluate_candidate(
    ctx: StageContext, candidate: dict[str, Any], rows: list[dict[str, Any]], full: list[dict[str, Any]]
) -> dict[str, Any]:
    """A pruned candidate scored as the full student is, and how often it answers as the full student does."""
    predictions, _, _ = predict(ctx, candidate["model"], rows)
    path = candidate_predictions(ctx.workdir, candidate["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, predictions)
    metric = ctx.spec.evaluation.metric
    gate = gated(ctx.spec.task, metric, reference_pairs(ctx.spec.evaluation.reference, rows, _outputs(predictions)))
    same = sum(a["output"] == b["output"] for a, b in zip(predictions, full, strict=True)) / max(1, len(rows))
    name, layers = candidate["name"], candidate["layers"]
    ctx.log(f"{name} ({layers} layers): {metric} {gate['value']:.3f}, answers as the full student on {same:.1%}")
    return {
        "name": name,
        "kind": "decoder",
        "layers": layers,
        "score": gate["value"],
        "interval": gate["interval"],
        "agreement": round(same, 6),
    }


def evaluate_linear(ctx: StageContext, folder: Path, full: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The linear student (when there is one), scored from scikit-learn's answers as the decoder is from
    PyTorch's: the same metric, interval and held-out inputs, and how often it answers as the decoder does."""
    made = linear_student.read_linear(folder)
    if made is None:
        return []
    predictions = read_jsonl(linear_student.predictions_path(folder))
    metric = ctx.spec.evaluation.metric
    rows = [
        {"output": p["expected"], **({"gold": f["gold"]} if "gold" in f else {})}
        for p, f in zip(predictions, full, strict=True)
    ]
    gate = gated(ctx.spec.task, metric, reference_pairs(ctx.spec.evaluation.reference, rows, _outputs(predictions)))
    same = sum(a["output"] == b["output"] for a, b in zip(predictions, full, strict=True)) / max(1, len(full))
    weights = made["parameters"]
    ctx.log(f"linear ({weights} weights): {metric} {gate['value']:.3f}, answers as the decoder on {same:.1%}")
    return [
        {
            "name": made["name"],
            "kind": "linear",
            "layers": 0,
            "parameters": made["parameters"],
            "score": gate["value"],
            "interval": gate["interval"],
            "agreement": round(same, 6),
        }
    ]


def majority_baseline(
    task: TaskIR, metric: str, train: list[dict[str, Any]], holdout: list[dict[str, Any]]
) -> dict[str, Any]:
    """The teacher's most common training answer, given for every held-out input, scored the same way."""
    answer = Counter(r["output"] for r in train).most_common(1)[0][0] if train else ""
    return {"answer": answer, **gated(task, metric, [(r["output"], answer) for r in holdout])}


def few_shot_baseline(
    ctx: StageContext, decoder: Decoder, rows: list[dict[str, Any]], eos: list[int]
) -> tuple[dict[str, Any], list[str]]:
    """The untrained base model, prompted with the spec's examples as the teacher is, decoded as the student
    is (within the label set or the schema) and scored the same way: what distillation bought. Its answers
    too (scored against gold where there is some)."""
    base, tokenizer = load_causal_lm(ctx.spec.student.base_model)
    prompt = few_shot_prompt(tokenizer, ctx.spec.task, eos)
    answers = [decoder.reply(base, prompt, r["input"])[1] for r in rows]
    scored = gated(
        ctx.spec.task, ctx.spec.evaluation.metric, [(r["output"], a) for r, a in zip(rows, answers, strict=True)]
    )
    return scored, answers


def _outputs(predictions: list[dict[str, Any]]) -> list[str]:
    return [p["output"] for p in predictions]


STAGE = Stage(
    name="evaluate",
    version=8,  # 8: against gold too, and the score against evaluation.reference; 7: the linear student too
    # student.base_model: the few-shot baseline is the untrained base model.
    reads=(
        "task",
        "evaluation.metric",
        "evaluation.reference",
        "deploy.max_new_tokens",
        "deploy.max_input_tokens",
        "student.base_model",
    ),
    needs=("split", "train", "prune", "linear"),
    produces=("predictions.jsonl",),
    run=run,
)
