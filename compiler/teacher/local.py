"""Teacher running in-process with transformers: no key, no network; GPU when there is one.

Label tasks are answered by scoring each label's log-likelihood after the few-shot prompt, so every
answer is inside the label set. Other tasks use batched greedy generation, sorted by length to cut padding.
"""

from __future__ import annotations

from typing import Any

from distillc.events import Event, Sink
from distillc.models import load_causal_lm, pick_device
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.teacher.journal import Journal

Pending = list[tuple[str, list[dict[str, str]]]]
BATCH = 8


def params(teacher: TeacherIR, task: TaskIR) -> dict[str, Any]:
    mode = "score_labels" if task.output_type == "label" else "generate"
    return {"mode": mode, "temperature": teacher.temperature, "max_tokens": teacher.max_tokens}


def complete(teacher: TeacherIR, task: TaskIR, pending: Pending, journal: Journal, emit: Sink) -> dict[str, str]:
    if not pending:
        return {}
    import torch

    model, tokenizer = load_causal_lm(teacher.model, pick_device())
    prompts = [
        (key, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        for key, messages in pending
    ]
    prompts.sort(key=lambda kp: len(kp[1]))  # similar lengths share a batch: less padding
    answer = _score_labels if task.output_type == "label" else _generate
    with torch.inference_mode():
        for start in range(0, len(prompts), BATCH):
            batch = prompts[start : start + BATCH]
            for (key, _), (text, usage) in zip(
                batch, answer(model, tokenizer, [p for _, p in batch], teacher, task), strict=True
            ):
                journal.append(key, text, usage)
            emit(Event("progress", "label", f"{min(start + BATCH, len(prompts))}/{len(prompts)} teacher answers"))
    return {}


def _score_labels(
    model: Any, tokenizer: Any, prompts: list[str], teacher: TeacherIR, task: TaskIR
) -> list[tuple[str, dict[str, int]]]:
    import torch

    eos = tokenizer.eos_token_id
    label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"] + [eos] for label in task.labels]
    rows, spans = [], []
    for prompt in prompts:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for ids in label_ids:
            spans.append((len(prompt_ids), len(ids)))
            rows.append(prompt_ids + ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
    logprobs = torch.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
    scores = []
    for row, (start, length) in enumerate(spans):
        targets = input_ids[row, start : start + length]
        scores.append(float(logprobs[row, start - 1 : start + length - 1].gather(1, targets[:, None]).sum()))
    out = []
    n = len(task.labels)
    for i in range(len(prompts)):
        best = max(range(n), key=lambda j, i=i: scores[i * n + j])
        usage = {"prompt_tokens": spans[i * n][0], "completion_tokens": len(label_ids[best])}
        out.append((task.labels[best], usage))
    return out


def _generate(
    model: Any, tokenizer: Any, prompts: list[str], teacher: TeacherIR, task: TaskIR
) -> list[tuple[str, dict[str, int]]]:
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, add_special_tokens=False, return_tensors="pt", padding=True).to(model.device)
    sample = teacher.temperature > 0
    out = model.generate(
        **enc,
        max_new_tokens=teacher.max_tokens,
        do_sample=sample,
        temperature=teacher.temperature if sample else None,
        top_p=None,
        top_k=None,
    )
    new = out[:, enc["input_ids"].shape[1] :]
    results = []
    for i, row in enumerate(new):
        tokens = [t for t in row.tolist() if t != tokenizer.pad_token_id]
        usage = {"prompt_tokens": int(enc["attention_mask"][i].sum()), "completion_tokens": len(tokens)}
        results.append((tokenizer.decode(tokens, skip_special_tokens=True).strip(), usage))
    return results
