"""One training job, whole: load the model, shape it (prune, LoRA), encode the rows, fit, save.

The same job trains the student from its base model, and recovers a pruned candidate from the trained
student (`layers` kept of it, distilled from `kd_model`, the trained student itself).

The train stage runs it in its own process, or, with `student.devices` above 1, once per device under
`torch.distributed.run` (`python -m distillc.student.train_job JOB.json`): every process runs this same
code, and only the first saves the model and the result.
"""

from __future__ import annotations

import heapq
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from distillc.build.artifacts import iter_jsonl
from distillc.data.split import unit_hash
from distillc.errors import DistillcError
from distillc.spec.ir import LoraIR, StudentIR
from distillc.student.examples import (
    Example,
    ExampleStore,
    derived_length,
    encode,
    fit_length,
    truncation,
    with_soft_label,
)
from distillc.student.models import load_causal_lm
from distillc.student.prompt import answer_ids, eos_ids, prompt_ids, prompt_template, save_prompt
from distillc.student.trainable import add_lora, prune_layers
from distillc.student.trainer import Schedule, epoch_batches, fit, padded_tokens

RESULT_FILE = "train-result.json"
# Dev rows at most, however large the data: enough to compare checkpoints by loss, and both their memory
# and each dev measurement stay the same at a million rows as at fifty thousand.
MAX_DEV_ROWS = 5_000


@dataclass(frozen=True)
class TrainJob:
    """What a training process needs, as plain data (it crosses into worker processes as JSON)."""

    base_model: str
    lora: dict[str, Any] | None
    layers: list[int]  # decoder layers kept, by index; empty: all
    max_seq_len: int  # 0: derived from the training rows (student.max_seq_len "auto")
    dev_share: float
    schedule: dict[str, Any]
    instructions: str
    labels: list[str]  # label tasks: the label set, for soft labels; otherwise empty
    train_path: str
    out_dir: str  # the model goes to out_dir/model, the result to out_dir/RESULT_FILE
    checkpoints: str  # "" = no checkpoints
    kd_model: str = ""  # a model whose answer-token logits the loss distills (schedule's kd_weight); "" = none

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def dev_rows(rows: Iterable[dict[str, Any]], share: float, train: ExampleStore, encoded: Any) -> list[dict[str, Any]]:
    """Each row to `train` (as `encoded(row)`), or to the dev slice returned: by a hash of each input, as the
    held-out split is, but salted apart; at most MAX_DEV_ROWS of them, those of the lowest hashes (a row
    pushed out of the slice trains). Rows stream past: only the dev slice is kept in memory. Without both
    sides, every row trains and there is no dev slice."""
    dev: list[tuple[float, int, dict[str, Any]]] = []  # a heap of (-hash, order, row): the highest hash on top
    for order, row in enumerate(rows):
        chance = unit_hash(f"dev:{row['id']}") if share > 0 else 1.0
        if chance < share:
            if len(dev) < MAX_DEV_ROWS:
                heapq.heappush(dev, (-chance, order, row))
                continue
            row = heapq.heappushpop(dev, (-chance, order, row))[2]  # the highest hash leaves the slice
        train.add(encoded(row), row)
    kept = [row for _, _, row in sorted(dev, key=lambda item: item[1])]  # in the rows' order
    if not len(train):  # every row fell to dev: they all train, in their order, with no dev slice
        for row in kept:
            train.add(encoded(row), row)
        return []
    return kept


def training_examples(
    job: TrainJob,
    tokenizer: Any,
    template: dict[str, str],
    soft: dict[str, list[int]],
    positions: int | None,
    folder: Path,
) -> tuple[ExampleStore, list[Example], dict[str, Any], dict[str, int]]:
    """(train, dev, length, cut): the job's rows tokenized as they are read, the training ones into a file
    in `folder` (memory holds the dev slice only); cut to student.max_seq_len, or to the length derived
    from the rows; with soft labels over `soft` (each label's tokens; empty for none). E314 when too many
    rows would be cut."""

    def encoded(row: dict[str, Any]) -> Example:
        return encode(tokenizer, prompt_ids(tokenizer, template, row["input"]), row["output"])

    whole = ExampleStore(folder)
    dev_set = dev_rows(iter_jsonl(Path(job.train_path)), job.dev_share, whole, encoded)
    length = {"tokens": job.max_seq_len, "from": "spec"} if job.max_seq_len else derived_length(whole.needed, positions)
    train = whole.fitted(length["tokens"], soft)
    dev = [fit_length(encoded(r), length["tokens"]) for r in dev_set]
    if soft:
        dev = [with_soft_label(e, soft, r) for e, r in zip(dev, dev_set, strict=True)]
    try:
        cut = truncation(train.needed, length["tokens"])  # before any training
    except DistillcError:
        train.close()
        raise
    return train, dev, length, cut


def run_job(job: TrainJob, log: Any = print) -> dict[str, Any]:
    import torch

    schedule = Schedule(**job.schedule)
    torch.manual_seed(schedule.seed)
    model, tokenizer = load_causal_lm(job.base_model)
    total_layers = model.config.num_hidden_layers
    kept = job.layers or list(range(total_layers))
    if job.layers:
        prune_layers(model, job.layers)
    teacher = load_causal_lm(job.kd_model)[0] if job.kd_model and schedule.kd_weight else None
    if job.lora is not None:
        # Activations are recomputed in the backward pass rather than kept: with adapters on every linear layer
        # they are most of LoRA's memory. Qwen2.5-0.5B's shape, batch 8 x 128 tokens, 2 cores: peak 14.1 ->
        # 7.3 GiB, steps no slower (bench/large_student.py). Full fine-tuning's optimizer state dominates
        # instead (10.8 -> 9.5 GiB, steps up to 40% slower): it keeps its activations.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model = add_lora(model, LoraIR(**{**job.lora, "target_modules": tuple(job.lora["target_modules"])}))
    prefix, suffix = prompt_template(tokenizer, job.instructions)
    template = {"prompt_prefix": prefix, "prompt_suffix": suffix}
    sequences = {label: answer_ids(tokenizer, label) for label in job.labels}

    soft = sequences if schedule.soft_label_weight else {}
    scratch = tempfile.TemporaryDirectory(prefix="distillc-train-")
    positions = getattr(model.config, "max_position_embeddings", None)
    train, dev, length, cut = training_examples(job, tokenizer, template, soft, positions, Path(scratch.name))
    checkpoints = Path(job.checkpoints) if job.checkpoints else None
    progress = fit(model, train, dev, schedule, tokenizer.pad_token_id, checkpoints, log, teacher)

    lengths = train.lengths()
    real, padded = padded_tokens(epoch_batches(len(train), schedule.batch_size, schedule.seed, 0), lengths)
    result = {
        "examples": len(train),
        "dev_examples": len(dev),
        "soft_labels": sum(bool(e.branches) for e in train),
        "truncated": cut["rows"],
        "longest_row": cut["longest"],
        "max_seq_len": length,
        "epochs": schedule.epochs,
        "steps": progress.step,
        "step_loss": progress.step_losses,
        "dev_loss": [[step, loss] for step, loss in progress.dev_losses or []],
        "best_step": progress.best_step if dev else progress.step,
        "stopped_early": progress.stopped_early,
        "resumed_from_step": progress.resumed_from,
        "packing": schedule.packing,
        "padding_share": 0.0 if schedule.packing else round(1 - real / padded, 4) if padded else 0.0,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "layers": {"kept": kept, "of": total_layers},
        "tokens_per_second": round(progress.tokens / progress.seconds, 1) if progress.seconds else 0.0,
    }
    train.close()
    scratch.cleanup()
    if _is_main():
        if job.lora is not None:
            model = model.merge_and_unload()  # a plain model again: exported and served like a full fine-tune
            model.gradient_checkpointing_disable()
            model.config.use_cache = True
        out = Path(job.out_dir) / "model"
        model.to("cpu").save_pretrained(out)
        tokenizer.save_pretrained(out)
        save_prompt(out, prefix, suffix, eos_ids(tokenizer, model.config), length["tokens"])
        (Path(job.out_dir) / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    return result


def run_training(job: TrainJob, devices: int, log: Any) -> dict[str, Any]:
    """Run `job` here, or with `devices` above 1 in one process per device; returns its result."""
    Path(job.out_dir).mkdir(parents=True, exist_ok=True)
    result = run_distributed(job, devices, log) if devices > 1 else run_job(job, log=log)
    (Path(job.out_dir) / RESULT_FILE).unlink(missing_ok=True)
    return result


def run_distributed(job: TrainJob, devices: int, log: Any) -> dict[str, Any]:
    """One process per device under torch.distributed.run, each running the same job; the first writes the
    model and the result."""
    job_file = Path(job.out_dir) / "train-job.json"
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
    log(f"training on {devices} processes: {' '.join(command[2:])}")
    threads = str(max(1, (os.cpu_count() or 1) // devices))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    job_file.unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        log(line)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise DistillcError(
            "E322",
            f"training on {devices} processes failed (exit {done.returncode}):\n{tail}",
            help="checkpoints are kept: a re-run resumes from the last one",
        )
    return json.loads((Path(job.out_dir) / RESULT_FILE).read_text(encoding="utf-8"))


def student_schedule(cfg: StudentIR, **changes: Any) -> Schedule:
    """The training schedule `student` asks for, with `changes` (a recovery's epochs and KD weight)."""
    plan = Schedule(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        grad_accumulation=cfg.grad_accumulation,
        learning_rate=cfg.learning_rate,
        seed=cfg.seed,
        soft_label_weight=cfg.soft_label_weight,
        packing=cfg.packing,
        checkpoint_every=cfg.checkpoint_every,
        patience=cfg.patience,
    )
    return replace(plan, **changes)


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def main() -> None:
    """A worker process: run the job named on the command line, logging from the first process only."""
    job = TrainJob.load(Path(sys.argv[1]))
    run_job(job, log=lambda message: print(message, flush=True) if _is_main() else None)


if __name__ == "__main__":
    main()
