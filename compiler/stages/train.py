"""Supervised fine-tuning of the student on the teacher's answers; loss on the answer tokens only.

CUDA (bf16 autocast) when present, CPU otherwise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_jsonl
from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.spec.ir import LoraIR
from distillc.student.distill import Branch, branches, kd_loss
from distillc.student.models import load_causal_lm, pick_device
from distillc.student.prompt import answer_ids, eos_ids, prompt_ids, prompt_template, save_prompt

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One training row: the tokens, the loss targets (IGNORE on the prompt), and for soft labels the branch
    points of the answer's path with the teacher's distribution there."""

    ids: list[int]
    labels: list[int]
    truncated: bool
    branches: list[Branch] = field(default_factory=list)


def encode(tokenizer: Any, prompt: list[int], target: str, max_len: int) -> Example:
    """The prompt is cut from the left when too long, the answer kept."""
    prompt_ids = list(prompt)
    target_ids = answer_ids(tokenizer, target)
    truncated = len(prompt_ids) + len(target_ids) > max_len
    if truncated:
        target_ids = target_ids[: max_len - 1]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_len - len(target_ids)) :]
    return Example(prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids, truncated)


def with_soft_label(example: Example, sequences: dict[str, list[int]], row: dict[str, Any]) -> Example:
    """The example with the branch points of its label's path, where the teacher's distribution is known."""
    if not row.get("soft") or row["output"] not in sequences:
        return example
    start = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    found = [b for b in branches(sequences, row["output"], row["soft"], start) if b.position < len(example.ids)]
    return replace(example, branches=found)


def run(ctx: StageContext, split: Path) -> dict[str, Any]:
    import torch

    cfg = ctx.spec.student
    torch.manual_seed(cfg.seed)
    device = pick_device()
    model, tokenizer = load_causal_lm(cfg.base_model, device)
    total_layers = model.config.num_hidden_layers
    kept = prune_layers(model, cfg.keep_layers) if cfg.keep_layers else list(range(total_layers))
    if cfg.lora is not None:
        model = add_lora(model, cfg.lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    prefix, suffix = prompt_template(tokenizer, ctx.spec.task.instructions)
    template = {"prompt_prefix": prefix, "prompt_suffix": suffix}
    eos = eos_ids(tokenizer, model.config)
    rows = read_jsonl(split / "train.jsonl")
    encoded = [
        encode(tokenizer, prompt_ids(tokenizer, template, r["input"]), r["output"], cfg.max_seq_len) for r in rows
    ]
    soft_weight = cfg.soft_label_weight if ctx.spec.task.output_type == "label" else 0.0
    if soft_weight:
        sequences = {label: answer_ids(tokenizer, label) for label in ctx.spec.task.labels}
        encoded = [with_soft_label(e, sequences, r) for e, r in zip(encoded, rows, strict=True)]
    truncated = sum(1 for e in encoded if e.truncated)

    model.train()
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    steps = cfg.epochs * math.ceil(len(encoded) / cfg.batch_size)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    epoch_losses, tokens, started = [], 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(encoded), generator=generator).tolist()
        total, batches = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = [encoded[i] for i in order[start : start + cfg.batch_size]]
            ids, labels, mask = _collate(batch, tokenizer.pad_token_id, device)
            with autocast:
                out = model(input_ids=ids, attention_mask=mask, labels=labels)
                loss = out.loss
                soft_rows = [e.branches for e in batch]
                if soft_weight and any(soft_rows):
                    loss = (1 - soft_weight) * loss + soft_weight * kd_loss(out.logits, soft_rows)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.detach().item()
            batches += 1
            tokens += int(mask.sum())
        epoch_losses.append(round(total / max(1, batches), 5))
        ctx.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {epoch_losses[-1]:.4f}")
    seconds = time.perf_counter() - started

    if cfg.lora is not None:
        model = model.merge_and_unload()  # a plain model again: exported and served like a full fine-tune
    out = ctx.workdir / "model"
    model.config.use_cache = True
    model.eval().to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_prompt(out, prefix, suffix, eos)
    return {
        "examples": len(encoded),
        "soft_labels": sum(bool(e.branches) for e in encoded),
        "truncated": truncated,
        "epochs": cfg.epochs,
        "epoch_loss": epoch_losses,
        "device": device,
        "method": cfg.method,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "layers": {"kept": kept, "of": total_layers},
        "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
    }


def prune_layers(model: Any, keep: int) -> list[int]:
    """Keep `keep` evenly spaced decoder layers (first and last included); returns their original indices."""
    import torch

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise DistillcError("E320", f"student.prune needs a decoder with model.layers; {type(model).__name__} has none")
    total = len(layers)
    if keep >= total:
        raise DistillcError(
            "E320",
            f"student.prune.keep_layers is {keep}, but the model has only {total} layers",
            help=f"choose fewer than {total}, or remove prune",
        )
    kept = [0] if keep == 1 else sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})
    model.model.layers = torch.nn.ModuleList(layers[i] for i in kept)
    for new_index, layer in enumerate(model.model.layers):
        if hasattr(getattr(layer, "self_attn", None), "layer_idx"):
            layer.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the new stack
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in kept]
    return kept


def add_lora(model: Any, lora: LoraIR) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) or "all-linear",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module name the model does not have
        raise DistillcError("E321", f"cannot add LoRA adapters: {str(exc).splitlines()[0]}") from None


def _collate(batch: list[Example], pad: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.ids) for e in batch)
    ids = [e.ids + [pad] * (width - len(e.ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    mask = [[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in batch]
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.long, device=device)  # noqa: E731
    return as_tensor(ids), as_tensor(labels), as_tensor(mask)


STAGE = Stage(
    name="train",
    version=3,  # 3: soft labels (student.soft_label_weight)
    reads=("task", "student"),
    needs=("split",),
    produces=("model/config.json", "model/model.safetensors", "model/tokenizer.json"),
    run=run,
)
