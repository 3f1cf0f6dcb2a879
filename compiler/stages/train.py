"""Fine-tune the student on the teacher's answers (and, for label tasks, its distribution over the labels).

The loop is distillc.student.trainer: packed batches (no padding), gradient accumulation, a dev slice that keeps
the best weights and stops early, atomic checkpoints that a re-run after a crash resumes from. CUDA (bf16
autocast) when present, CPU otherwise; with `student.devices` above 1, one process per device (DDP).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.student.train_job import TrainJob, run_training, student_schedule
from distillc.task import task_type


def checkpoint_dir(ctx: StageContext) -> Path:
    """Checkpoints live outside the stage's temporary folder, under its key: a re-run of the same training
    finds them, a changed spec or dataset does not."""
    return ctx.build_dir / "checkpoints" / f"train-{ctx.key[:24]}"


def run(ctx: StageContext, split: Path) -> dict[str, Any]:
    cfg = ctx.spec.student
    task = ctx.spec.task
    choices = task_type(task).choices(task)  # a closed answer set: the teacher's scores over it are soft labels
    schedule = student_schedule(cfg, soft_label_weight=cfg.soft_label_weight if choices else 0.0)
    checkpoints = checkpoint_dir(ctx)
    job = TrainJob(
        base_model=cfg.base_model,
        lora=asdict(cfg.lora) if cfg.lora is not None else None,
        layers=[],
        max_seq_len=cfg.max_seq_len,
        dev_share=cfg.dev_share,
        schedule=asdict(schedule),
        instructions=task.instructions,
        labels=list(choices),
        train_path=str(split / "train.jsonl"),
        out_dir=str(ctx.workdir),
        checkpoints=str(checkpoints),
    )
    result = run_training(job, cfg.devices, ctx.log)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the model is in the artifact now
    if result["truncated"]:
        ctx.emit(
            Event(
                "warning",
                ctx.stage,
                f"{result['truncated']} of {result['examples']} training rows were cut from the left to "
                f"student.max_seq_len {result['max_seq_len']['tokens']} (the longest is {result['longest_row']} "
                "tokens, prompt and answer); the package refuses inputs whose prompt is over deploy.max_input_tokens",
            )
        )
    import torch

    return {
        **result,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "devices": cfg.devices,
        "method": cfg.method,
    }


STAGE = Stage(
    name="train",
    version=4,  # 4: packing, accumulation, dev slice and early stopping, checkpoints, devices
    # Not student.prune: the candidates are cut from this student afterwards (the prune stage).
    reads=(
        "task",
        "student.base_model",
        "student.method",
        "student.lora",
        "student.epochs",
        "student.learning_rate",
        "student.batch_size",
        "student.max_seq_len",
        "student.seed",
        "student.grad_accumulation",
        "student.packing",
        "student.dev_share",
        "student.patience",
        "student.checkpoint_every",
        "student.devices",
        "student.soft_label_weight",
    ),
    needs=("split",),
    produces=("model/config.json", "model/model.safetensors", "model/tokenizer.json"),
    run=run,
)
