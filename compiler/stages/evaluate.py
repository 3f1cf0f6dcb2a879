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
from distillc.student.models import load_causal_lm, quiet_transformers
from distillc.student.prompt import few_shot_prompt, label_sequences, load_prompt, prompt_ids
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
    decoder = Decoder(
        task, tokenizer, model_dir / "tokenizer.json", model.config.vocab_size, ctx.spec.deploy.max_new_tokens
    )
    rows = read_jsonl(split / "holdout.jsonl")
    predictions = []
    for row in rows:
        new, text = decoder.answer(model, prompt_ids(tokenizer, prompt, row["input"]), prompt["eos_token_ids"])
        predictions.append(
            {
                "id": row["id"],
                "input": row["input"],
                "expected": row["output"],
                "output": text,
                "output_ids": new,
                "agrees": agrees(task, row["output"], text),
            }
        )
    labels, grammar = decoder.labels, decoder.grammar
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
        "baselines": {
            "majority": majority_baseline(task, metric, read_jsonl(split / "train.jsonl"), rows),
            "few_shot_base": few_shot_baseline(ctx, decoder, rows, prompt["eos_token_ids"]),
        },
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


def few_shot_baseline(
    ctx: StageContext, decoder: Decoder, rows: list[dict[str, Any]], eos: list[int]
) -> dict[str, Any]:
    """The untrained base model, prompted with the spec's examples as the teacher is, decoded as the student
    is (within the label set or the schema) and scored the same way: what distillation bought."""
    base, tokenizer = load_causal_lm(ctx.spec.student.base_model)
    prompt = few_shot_prompt(tokenizer, ctx.spec.task, eos)
    answers = [decoder.answer(base, prompt_ids(tokenizer, prompt, r["input"]), eos)[1] for r in rows]
    return gated(
        ctx.spec.task, ctx.spec.evaluation.metric, [(r["output"], a) for r, a in zip(rows, answers, strict=True)]
    )


class Decoder:
    """Greedy decoding of one task's answers with a PyTorch model, as the package decodes them: over the
    label set, within the JSON Schema, or free up to the token limit."""

    def __init__(self, task: TaskIR, tokenizer: Any, tokenizer_json: Path, vocab_size: int, limit: int) -> None:
        self.tokenizer, self.limit = tokenizer, limit
        self.labels = None
        if task.output_type == "label":
            sequences = label_sequences(tokenizer, task.labels)
            self.labels = LabelTrie([s["text"] for s in sequences], [s["ids"] for s in sequences])
        self.grammar = None
        if task.output_type == "json":
            text = tokenizer_json.read_text(encoding="utf-8")
            self.grammar = JsonGrammar(text, task.json_schema, tokenizer.eos_token_id, vocab_size)

    def answer(self, model: Any, ids: list[int], eos: list[int]) -> tuple[list[int], str]:
        """(answer tokens, answer text) for the prompt `ids`."""
        import torch

        with torch.inference_mode():
            prompt = torch.tensor([ids])
            if self.labels is not None:
                state = classify(model, prompt, self.labels)
                return state.answer_ids(), self.labels.texts[state.label]
            if self.grammar is not None:
                new = generate_json(model, prompt, self.grammar.start(), self.limit, set(eos))
            else:
                out = model.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=self.limit,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new = [t for t in out[0, prompt.shape[1] :].tolist() if t not in eos]
        return new, self.tokenizer.decode(new, skip_special_tokens=True).strip()


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
    # student.base_model: the few-shot baseline is the untrained base model.
    reads=("task", "evaluation.metric", "deploy.max_new_tokens", "student.base_model"),
    needs=("split", "train"),
    produces=("predictions.jsonl",),
    run=run,
)
