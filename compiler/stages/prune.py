"""Smaller students cut from the trained one by depth, and distilled from it (`student.prune`).

For each candidate layer count, largest first:
- which layers go: the contiguous block whose removal changes the trained student's hidden state least, at
  the last prompt token of training inputs (distillc.student.trainable.layers_to_keep); the last layer stays;
- recovery: the cut model trains on the teacher-labeled rows, plus extra inputs (inputs.source beyond its
  limit) answered by the trained student, which costs no teacher call; the loss is the KL to the trained
  student's logits on the answer tokens, mixed with the answers' cross-entropy (`prune.kd_weight`).
Each candidate lands in candidates/<name>/model; evaluate, export and verify take every candidate, and the
gate ships the smallest one that passes.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distillc.artifacts.prune import CANDIDATES, Candidate, candidate_dir, candidate_name, write_candidates
from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.data.sources import Reading, read_inputs
from distillc.spec.ir import InputsIR, SpecIR
from distillc.student.models import load_causal_lm
from distillc.student.prompt import load_prompt, prompt_ids
from distillc.student.train_job import TrainJob, run_training, student_schedule
from distillc.student.trainable import layers_to_keep

PROBE_ROWS = 64  # training prompts the layer choice is measured on


def run(ctx: StageContext, inputs: Path, split: Path, train: Path) -> dict[str, Any]:
    prune = ctx.spec.student.prune
    if prune is None:
        write_candidates(ctx.workdir, [])
        return {"candidates": []}
    full = train / "model"
    model, tokenizer = load_causal_lm(str(full))
    prompt = load_prompt(full)
    train_rows = read_jsonl(split / "train.jsonl")
    extra = student_answers(ctx, full, model, tokenizer, read_jsonl(inputs / "inputs.jsonl"))
    recovery = ctx.workdir / "recovery.jsonl"
    write_jsonl(recovery, [*train_rows, *extra])
    probes = [prompt_ids(tokenizer, prompt, r["input"]) for r in train_rows[:PROBE_ROWS]]
    total = model.config.num_hidden_layers
    made: list[Candidate] = []
    for keep in prune.candidates:
        kept = layers_to_keep(model, probes, keep)
        name = candidate_name(keep)
        ctx.log(f"{name}: keeping layers {kept} of {total}; distilling from the trained student")
        result = recover(ctx, full, kept, recovery, candidate_dir(ctx.workdir, name))
        made.append(
            Candidate(
                name=name,
                layers=keep,
                kept=kept,
                steps=result["steps"],
                final_loss=result["step_loss"][-1] if result["step_loss"] else None,
                dev_loss=result["dev_loss"],
                tokens_per_second=result["tokens_per_second"],
            )
        )
    write_candidates(ctx.workdir, made)
    return {
        "candidates": made,
        "of_layers": total,
        "teacher_rows": len(train_rows),
        "student_rows": len(extra),
        "kd_weight": prune.kd_weight,
        "epochs": prune.epochs,
    }


def student_answers(
    ctx: StageContext, model_dir: Path, model: Any, tokenizer: Any, known: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Up to `prune.extra_inputs` inputs the teacher never saw, each with the trained student's answer."""
    spec: SpecIR = ctx.spec
    wanted = spec.student.prune.extra_inputs if spec.student.prune else 0
    if not wanted:
        return []
    if spec.inputs.mode != "source":
        ctx.emit(Event("warning", ctx.stage, "generated inputs: recovery trains on the teacher-labeled rows only"))
        return []
    fresh = unseen_inputs(spec.inputs, known, wanted)
    if len(fresh) < wanted:
        ctx.log(f"inputs.source holds {len(fresh)} inputs beyond the teacher-labeled ones ({wanted} wanted)")
    answered = answer(spec, model_dir, model, tokenizer, fresh)
    ctx.log(f"{len(answered)} extra inputs answered by the trained student")
    return answered


def unseen_inputs(source: InputsIR, known: list[dict[str, Any]], wanted: int) -> list[dict[str, str]]:
    """Up to `wanted` inputs of the source files that are not among `known` (the teacher-labeled ones)."""
    seen = {r["input"].lower() for r in known}
    fresh: list[dict[str, str]] = []
    for row in read_inputs(source, Reading()):
        if len(fresh) >= wanted:
            break
        if row["input"].lower() not in seen:
            fresh.append({"id": row["id"], "input": row["input"]})
    return fresh


def answer(
    spec: SpecIR, model_dir: Path, model: Any, tokenizer: Any, rows: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """`rows` with the student's answers, decoded as the package decodes them (over the labels, within the schema)."""
    from distillc.student.decode import Decoder

    prompt = load_prompt(model_dir)
    limit = spec.deploy.max_new_tokens
    decoder = Decoder(spec.task, tokenizer, model_dir / "tokenizer.json", model.config.vocab_size, limit)
    out = []
    for row in rows:
        _, text = decoder.reply(model, prompt, row["input"])
        out.append({**row, "output": text, "by": "student"})
    return out


def recover(ctx: StageContext, full: Path, kept: list[int], rows: Path, out: Path) -> dict[str, Any]:
    """Train the trained student cut to `kept` layers on `rows`, distilling its logits; the model lands in
    out/model."""
    checkpoints = ctx.build_dir / "checkpoints" / f"prune-{ctx.key[:24]}-{out.name}"
    result = run_training(recovery_job(ctx.spec, full, kept, rows, out, checkpoints), ctx.spec.student.devices, ctx.log)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def recovery_job(spec: SpecIR, full: Path, kept: list[int], rows: Path, out: Path, checkpoints: Path) -> TrainJob:
    cfg, prune = spec.student, spec.student.prune
    assert prune is not None
    return TrainJob(
        base_model=str(full),
        lora=None,  # the cut model is small: every weight trains
        layers=kept,
        max_seq_len=int(load_prompt(full)["max_seq_len"]),  # the trained student's length, derived or set
        dev_share=cfg.dev_share,
        schedule=asdict(student_schedule(cfg, epochs=prune.epochs, kd_weight=prune.kd_weight, soft_label_weight=0.0)),
        instructions=spec.task.instructions,
        labels=[],
        train_path=str(rows),
        out_dir=str(out),
        checkpoints=str(checkpoints),
        kd_model=str(full),
    )


STAGE = Stage(
    name="prune",
    version=1,
    reads=("task", "inputs", "student", "deploy.max_new_tokens"),
    needs=("inputs", "split", "train"),
    produces=(CANDIDATES,),
    run=run,
)
