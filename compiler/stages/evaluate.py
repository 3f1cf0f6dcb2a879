"""Score the trained student against the teacher on the held-out inputs (greedy, batch 1, as served).

A label task is decoded over its label set and a JSON task within its schema, as the package decodes
them (distillc_runtime.constrain), so the score is that of the answers users will get.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.quality.checks import degenerate, small_holdout
from distillc.quality.metrics import gated, task_metrics
from distillc.quality.scoring import agrees
from distillc.spec.ir import TaskIR
from distillc.student.models import quiet_transformers
from distillc.student.prompt import label_sequences, load_prompt, prompt_ids
from distillc_runtime.constrain import JsonGrammar, JsonState, LabelState, LabelTrie


def run(ctx: StageContext, split: Path, train: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()

    model_dir = train / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = load_prompt(model_dir)
    task = ctx.spec.task
    labels = None
    if task.output_type == "label":
        sequences = label_sequences(tokenizer, task.labels)
        labels = LabelTrie([s["text"] for s in sequences], [s["ids"] for s in sequences])
    grammar = None
    if task.output_type == "json":
        tokenizer_json = (model_dir / "tokenizer.json").read_text(encoding="utf-8")
        grammar = JsonGrammar(tokenizer_json, task.json_schema, tokenizer.eos_token_id, model.config.vocab_size)
    rows = read_jsonl(split / "holdout.jsonl")
    predictions = []
    with torch.inference_mode():
        for row in rows:
            ids = {"input_ids": torch.tensor([prompt_ids(tokenizer, prompt, row["input"])])}
            ids["attention_mask"] = torch.ones_like(ids["input_ids"])
            if labels is not None:
                state = classify(model, ids["input_ids"], labels)
                new, text = state.answer_ids(), labels.texts[state.label]
            elif grammar is not None:
                limit, stop = ctx.spec.deploy.max_new_tokens, set(prompt["eos_token_ids"])
                new = generate_json(model, ids["input_ids"], grammar.start(), limit, stop)
                text = tokenizer.decode(new, skip_special_tokens=True).strip()
            else:
                out = model.generate(
                    **ids,
                    max_new_tokens=ctx.spec.deploy.max_new_tokens,
                    do_sample=False,
                    eos_token_id=prompt["eos_token_ids"],
                    pad_token_id=tokenizer.pad_token_id,
                )
                new = [t for t in out[0, ids["input_ids"].shape[1] :].tolist() if t not in prompt["eos_token_ids"]]
                text = tokenizer.decode(new, skip_special_tokens=True).strip()
            predictions.append(
                {
                    "id": row["id"],
                    "input": row["input"],
                    "expected": row["output"],
                    "output": text,
                    "output_ids": new,
                    "agrees": agrees(ctx.spec.task, row["output"], text),
                }
            )
    write_jsonl(ctx.workdir / "predictions.jsonl", predictions)
    metric = ctx.spec.evaluation.metric
    pairs = [(p["expected"], p["output"]) for p in predictions]
    metrics = task_metrics(task, pairs)
    gate = gated(task, metric, pairs, metrics)
    ctx.log(
        f"{metric} {gate['value']:.3f}, 95% interval [{gate['interval'][0]:.3f}, {gate['interval'][1]:.3f}], "
        f"on {len(pairs)} held-out inputs"
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
    return {
        "decoding": "label-constrained" if labels else "json-schema-constrained" if grammar else "greedy",
        "cut_short": cut_short,
        "metric": metric,
        "score": gate["value"],
        "interval": gate["interval"],
        "metrics": metrics,
        "baselines": {"majority": majority_baseline(task, metric, read_jsonl(split / "train.jsonl"), rows)},
        "warnings": warnings,
        "n": len(predictions),
        "disagreements": misses,
    }


def majority_baseline(
    task: TaskIR, metric: str, train: list[dict[str, Any]], holdout: list[dict[str, Any]]
) -> dict[str, Any]:
    """The teacher's most common training answer, given for every held-out input, scored the same way."""
    answer = Counter(r["output"] for r in train).most_common(1)[0][0] if train else ""
    return {"answer": answer, **gated(task, metric, [(r["output"], answer) for r in holdout])}


def classify(model: Any, prompt_ids: Any, labels: LabelTrie) -> LabelState:
    """Greedy decoding over the label set with the PyTorch model, step for step as the package does it."""
    state = labels.start()
    ids, cache = prompt_ids, None
    while not state.done:
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = state.choose(out.logits[0, -1].float().numpy())
        state.advance(token)
        ids, cache = ids.new_tensor([[token]]), out.cache
    return state


def generate_json(model: Any, prompt_ids: Any, state: JsonState, limit: int, eos_ids: set[int]) -> list[int]:
    """Greedy decoding within a JSON schema with the PyTorch model, step for step as the package does it."""
    ids, cache, out = prompt_ids, None, []
    for _ in range(limit):
        step = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = state.choose(step.logits[0, -1].float().numpy())
        if token in eos_ids:
            break
        out.append(token)
        state.advance(token)
        if state.done:
            break
        ids, cache = ids.new_tensor([[token]]), step.cache
    return out


STAGE = Stage(
    name="evaluate",
    version=5,  # 5: every metric with its 95% interval, baselines, degenerate-answer checks
    reads=("task", "evaluation.metric", "deploy.max_new_tokens"),
    needs=("split", "train"),
    produces=("predictions.jsonl",),
    run=run,
)
