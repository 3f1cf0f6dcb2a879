"""Fine-tune the student on the teacher's answers (and, for label tasks, its distribution over the labels).

The loop is distillc.student.trainer: packed batches (no padding), gradient accumulation, a dev slice that keeps
the best weights and stops early, atomic checkpoints that a re-run after a crash resumes from. CUDA (bf16
autocast) when present, CPU otherwise; with `student.devices` above 1, one process per device (DDP).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.student.train_job import RESULT_FILE, TrainJob, run_job
from distillc.student.trainer import Schedule


def checkpoint_dir(ctx: StageContext) -> Path:
    """Checkpoints live outside the stage's temporary folder, under its key: a re-run of the same training
    finds them, a changed spec or dataset does not."""
    return ctx.build_dir / "checkpoints" / f"train-{ctx.key[:24]}"


def run(ctx: StageContext, split: Path) -> dict[str, Any]:
    cfg = ctx.spec.student
    task = ctx.spec.task
    schedule = Schedule(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        grad_accumulation=cfg.grad_accumulation,
        learning_rate=cfg.learning_rate,
        seed=cfg.seed,
        soft_label_weight=cfg.soft_label_weight if task.output_type == "label" else 0.0,
        packing=cfg.packing,
        checkpoint_every=cfg.checkpoint_every,
        patience=cfg.patience,
    )
    checkpoints = checkpoint_dir(ctx)
    job = TrainJob(
        base_model=cfg.base_model,
        lora=asdict(cfg.lora) if cfg.lora is not None else None,
        keep_layers=cfg.keep_layers,
        max_seq_len=cfg.max_seq_len,
        dev_share=cfg.dev_share,
        schedule=asdict(schedule),
        instructions=task.instructions,
        labels=list(task.labels) if task.output_type == "label" else [],
        train_path=str(split / "train.jsonl"),
        out_dir=str(ctx.workdir),
        checkpoints=str(checkpoints),
    )
    result = _launch(ctx, job, cfg.devices) if cfg.devices > 1 else run_job(job, log=ctx.log)
    (ctx.workdir / RESULT_FILE).unlink(missing_ok=True)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the model is in the artifact now
    import torch

    return {
        **result,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "devices": cfg.devices,
        "method": cfg.method,
    }


def _launch(ctx: StageContext, job: TrainJob, devices: int) -> dict[str, Any]:
    """One process per device under torch.distributed.run, each running the same job; the first writes the
    model and the result."""
    job_file = ctx.workdir / "train-job.json"
    job.save(job_file)
    with socket.socket() as s:  # a free port for the processes to meet on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={devices}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        "distillc.student.train_job",
        str(job_file),
    ]
    ctx.log(f"training on {devices} processes: {' '.join(command[2:])}")
    threads = str(max(1, (os.cpu_count() or 1) // devices))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    job_file.unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        ctx.log(line)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise DistillcError(
            "E322",
            f"training on {devices} processes failed (exit {done.returncode}):\n{tail}",
            help="checkpoints are kept: a re-run resumes from the last one",
        )
    return json.loads((ctx.workdir / RESULT_FILE).read_text(encoding="utf-8"))


STAGE = Stage(
    name="train",
    version=4,  # 4: packing, accumulation, dev slice and early stopping, checkpoints, devices
    reads=("task", "student"),
    needs=("split",),
    produces=("model/config.json", "model/model.safetensors", "model/tokenizer.json"),
    run=run,
    sources=(
        "distillc.student.train_job",
        "distillc.student.trainer",
        "distillc.student.examples",
        "distillc.student.distill",
        "distillc.student.trainable",
        "distillc.stages.split",  # unit_hash picks the dev slice
    ),
)
