"""The training loop, in one process or several (DDP under Hugging Face accelerate), from the same code.

- Batches: each epoch's order comes from the seed and the epoch alone. With `packing`, a batch's rows are
  laid end to end in one sequence, positions restarting at each row, so attention stays within a row (the
  model builds a block-diagonal mask from the positions) and no compute goes to padding; the batch is the
  same rows, and the loss the same, as padded. Logits are computed only where the loss reads them.
- A step is `grad_accumulation` batches. Its loss is the answer tokens' summed cross-entropy over the whole
  step's answer tokens (and the soft-label KL over the step's rows that have one), whichever process or
  micro-batch holds them: accumulating, or splitting a batch across processes, gives the gradient of the
  one large batch.
- Every `checkpoint_every` steps, and at each epoch's end, the dev slice's loss is measured; the best
  weights are kept, and `patience` measurements without improvement end training early.
- At each of those points the whole state (trainable weights, optimizer, scheduler, RNG, position in the
  data) is written atomically; a run that finds it goes on from that step as if never interrupted.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distillc.student.distill import kd_sum
from distillc.student.examples import IGNORE, Example

PACK_TOKENS = 8192  # most tokens in one packed sequence: the attention mask grows with its square
STATE_FILE = "state.pt"
BEST_FILE = "best.pt"


@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch_size: int
    grad_accumulation: int
    learning_rate: float
    seed: int
    soft_label_weight: float
    packing: bool
    checkpoint_every: int  # optimizer steps between checkpoints (and dev measurements)
    patience: int  # dev measurements without improvement before stopping; 0: never stop early
    kd_weight: float = 0.0  # with a teacher model: weight of the KL to its logits against the answer's cross-entropy


def epoch_batches(rows: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indexes per batch for one epoch: a function of the seed and epoch only, so a resumed run sees
    the same batches."""
    order = list(range(rows))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def steps_per_epoch(rows: int, schedule: Schedule) -> int:
    return math.ceil(math.ceil(rows / schedule.batch_size) / schedule.grad_accumulation)


def padded_tokens(batches: list[list[int]], lengths: list[int]) -> tuple[int, int]:
    """(real tokens, tokens including padding) over the batches: what packing saves."""
    real = sum(lengths[i] for batch in batches for i in batch)
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return real, padded


def packs(rows: list[Example], budget: int = PACK_TOKENS) -> list[list[Example]]:
    """The rows in consecutive groups of at most `budget` tokens (a longer row alone)."""
    out: list[list[Example]] = []
    size = 0
    for row in rows:
        if out and size + len(row.ids) <= budget:
            out[-1].append(row)
            size += len(row.ids)
        else:
            out.append([row])
            size = len(row.ids)
    return out


def answer_tokens(example: Example) -> int:
    """Positions that carry loss (the first token is never predicted, so it cannot)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE)


def micro_loss(
    model: Any,
    rows: list[Example],
    pad: int,
    device: Any,
    norm: tuple[int, int],
    schedule: Schedule,
    teacher: Any = None,
) -> Any:
    """These rows' share of their step's loss; `norm` is (answer tokens, rows with a distribution) in the
    whole step. Packed: one sequence, no padding; otherwise a right-padded batch. With a `teacher` model,
    the answer tokens' cross-entropy is mixed with the KL from its logits (logits distillation)."""
    import torch

    soft, packed = schedule.soft_label_weight, schedule.packing

    width = max(len(e.ids) for e in rows)
    # Where each row starts in the flattened input, and the positions whose logits the loss reads.
    starts = [i * width for i in range(len(rows))] if not packed else [0]
    if packed:
        for e in rows[:-1]:
            starts.append(starts[-1] + len(e.ids))
    targets, predicted_at, branch_at = [], [], []
    for start, e in zip(starts, rows, strict=True):
        for p in range(1, len(e.labels)):
            if e.labels[p] != IGNORE:
                targets.append(e.labels[p])
                predicted_at.append(start + p - 1)
        branch_at.append([start + b.position for b in e.branches])
    keep = sorted(set(predicted_at) | {p for row in branch_at for p in row})
    index = {p: i for i, p in enumerate(keep)}
    as_long = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
    if packed:
        ids = as_long([[t for e in rows for t in e.ids]])
        positions = as_long([[p for e in rows for p in range(len(e.ids))]])

        def forward(m: Any) -> Any:
            # No attention mask and no cache: the model reads the row boundaries from the restarting positions.
            return m(input_ids=ids, position_ids=positions, logits_to_keep=as_long(keep), use_cache=False).logits[0]
    else:
        ids = as_long([e.ids + [pad] * (width - len(e.ids)) for e in rows])
        mask = as_long([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in rows])

        def forward(m: Any) -> Any:
            return m(input_ids=ids, attention_mask=mask, use_cache=False).logits.flatten(0, 1)[as_long(keep)]

    logits = forward(model)
    answer_at = as_long([index[p] for p in predicted_at])
    picked = logits[answer_at].float()
    loss = torch.nn.functional.cross_entropy(picked, as_long(targets), reduction="sum") / max(1, norm[0])
    if teacher is not None and schedule.kd_weight:
        with torch.no_grad():
            reference = forward(teacher)[answer_at].float()
        loss = (1 - schedule.kd_weight) * loss + schedule.kd_weight * logits_kd(picked, reference) / max(1, norm[0])
    if soft and norm[1]:
        pairs = [
            (logits[index[p]], b)
            for e, row in zip(rows, branch_at, strict=True)
            for p, b in zip(row, e.branches, strict=True)
        ]
        loss = (1 - soft) * loss + soft * kd_sum(pairs) / norm[1]
    return loss


def logits_kd(student: Any, teacher: Any) -> Any:
    """Sum over positions of KL(teacher || student), each row of both a vocabulary-sized vector of logits."""
    import torch

    return torch.nn.functional.kl_div(
        torch.log_softmax(student, dim=-1), torch.log_softmax(teacher, dim=-1), log_target=True, reduction="sum"
    )


def packing_is_exact(model: Any, rows: list[Example], device: Any) -> bool:
    """Whether this model keeps packed rows apart: the logits of two rows packed equal their own. A model
    that does not build its attention mask from restarting positions fails, and trains padded instead."""
    import torch

    pair = sorted(rows[:8], key=lambda e: len(e.ids))[-2:]
    if len(pair) < 2:
        return True
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([e.ids], device=device), use_cache=False).logits[0] for e in pair]
        ids = torch.tensor([pair[0].ids + pair[1].ids], device=device)
        positions = torch.tensor([list(range(len(pair[0].ids))) + list(range(len(pair[1].ids)))], device=device)
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
    return torch.allclose(packed, torch.cat(alone), atol=1e-3, rtol=1e-3)


@dataclass
class Progress:
    """Where training is, as a checkpoint holds it."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    tokens: int = 0
    step_losses: list[float] | None = None
    dev_losses: list[tuple[int, float]] | None = None
    best_loss: float = math.inf
    best_step: int = 0
    since_best: int = 0
    stopped_early: bool = False
    resumed_from: int = 0
    seconds: float = 0.0
    best_weights: dict[str, Any] | None = None  # in memory only: the checkpoint keeps them in BEST_FILE

    def __post_init__(self) -> None:
        self.step_losses = self.step_losses or []
        self.dev_losses = self.dev_losses or []


def trainable_state(model: Any) -> dict[str, Any]:
    """The weights training changes (all of them, or only the adapters), on the CPU."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file, fsync, then rename over: a crash leaves the old file or the new, whole."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            writer = _Writes(f)
            try:
                torch.save(obj, writer)
            except RuntimeError:
                # torch's writer turns a failed write (a full disk) into "unexpected pos": say what it was
                if writer.error is not None:
                    raise writer.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Writes:
    """A file as torch.save writes it, keeping the OSError of a failed write."""

    def __init__(self, file: Any) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def fit(
    model: Any,
    train: list[Example],
    dev: list[Example],
    schedule: Schedule,
    pad: int,
    checkpoints: Path | None,
    log: Callable[[str], None],
    teacher: Any = None,
) -> Progress:
    """Train `model` in place on `train`; leaves it holding the best dev weights (or the last, without dev).
    `teacher`: a frozen model whose logits on the answer tokens the loss distills (schedule.kd_weight)."""
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.to(device)
    model.train()
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
    model.config.use_cache = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=schedule.learning_rate, weight_decay=0.0)
    per_epoch = steps_per_epoch(len(train), schedule)
    total = schedule.epochs * per_epoch
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    if schedule.packing and not packing_is_exact(model, train, device):
        log(f"{type(model).__name__} does not keep packed rows apart: training on padded batches instead")
        schedule = replace(schedule, packing=False)
    wrapped = accelerator.prepare_model(model)
    raw = accelerator.unwrap_model(wrapped)
    progress = Progress()
    if checkpoints is not None and (checkpoints / STATE_FILE).exists():
        progress = _resume(checkpoints, raw, optimizer, scheduler)
        log(f"resumed at step {progress.step} of {total} from {checkpoints}")

    def measure_dev() -> None:
        if not dev:
            return
        loss = dev_loss(raw, dev, pad, device, schedule, autocast, teacher)
        progress.dev_losses.append((progress.step, loss))
        if loss < progress.best_loss:
            progress.best_loss, progress.best_step, progress.since_best = loss, progress.step, 0
            progress.best_weights = trainable_state(raw)
            if checkpoints is not None and accelerator.is_main_process:
                save_atomic(progress.best_weights, checkpoints / BEST_FILE)
        else:
            progress.since_best += 1
            if schedule.patience and progress.since_best >= schedule.patience:
                progress.stopped_early = True
        best = f"best {progress.best_loss:.4f} at step {progress.best_step}"
        log(f"step {progress.step}/{total}: dev loss {loss:.4f} ({best})")

    def checkpoint() -> None:
        if checkpoints is not None and accelerator.is_main_process:
            state = {
                "weights": trainable_state(raw),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "progress": {k: v for k, v in vars(progress).items() if k != "best_weights"},
            }
            save_atomic(state, checkpoints / STATE_FILE)
        accelerator.wait_for_everyone()

    started = time.perf_counter()
    while progress.epoch < schedule.epochs and not progress.stopped_early:
        batches = epoch_batches(len(train), schedule.batch_size, schedule.seed, progress.epoch)
        accumulate = schedule.grad_accumulation
        steps = [batches[i : i + accumulate] for i in range(0, len(batches), accumulate)]
        for micro_batches in steps[progress.step_in_epoch :]:
            step_rows = [train[i] for batch in micro_batches for i in batch]
            norm = (sum(map(answer_tokens, step_rows)), sum(1 for e in step_rows if e.branches))
            # This process's rows of each batch, as the forward passes that carry them.
            passes = []
            for batch in micro_batches:
                mine = [train[i] for i in batch[rank::world]]
                if not mine:  # fewer rows than processes: take part in the all-reduce, adding nothing
                    passes.append(([train[batch[0]]], 0.0))
                    continue
                passes += [(p, 1.0) for p in (packs(mine) if schedule.packing else [mine])]
            step_loss = 0.0
            for n, (rows, weight) in enumerate(passes):
                sync = n == len(passes) - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(wrapped), autocast:
                    loss = micro_loss(wrapped, rows, pad, device, norm, schedule, teacher)
                    accelerator.backward(loss * weight * world)  # DDP averages gradients over processes: sum them
                step_loss += float(loss.detach()) * weight
            step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=device), reduction="sum"))
            progress.tokens += sum(len(e.ids) for e in step_rows)  # the whole step's, on every process
            accelerator.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.step_in_epoch += 1
            progress.step_losses.append(round(step_loss, 6))
            if schedule.checkpoint_every and progress.step % schedule.checkpoint_every == 0:
                measure_dev()
                checkpoint()
                if progress.stopped_early:
                    break
        else:
            progress.epoch += 1
            progress.step_in_epoch = 0
            log(f"epoch {progress.epoch}/{schedule.epochs}: loss {_mean(progress.step_losses[-len(steps) :]):.4f}")
            if not schedule.checkpoint_every or progress.step % schedule.checkpoint_every:
                measure_dev()
                checkpoint()
    progress.seconds += time.perf_counter() - started
    best = progress.best_weights
    if best is None and dev and checkpoints is not None and (checkpoints / BEST_FILE).exists():
        best = torch.load(checkpoints / BEST_FILE, weights_only=True)  # measured before a resume
    if best is not None and progress.best_step != progress.step:
        _load_trainable(raw, best)
    raw.eval()
    raw.config.use_cache = True
    return progress


def dev_loss(
    model: Any, dev: list[Example], pad: int, device: Any, schedule: Schedule, autocast: Any, teacher: Any = None
) -> float:
    """The training objective on the dev slice, in batches, without gradients."""
    import torch

    was_training = model.training
    model.eval()
    norm = (sum(map(answer_tokens, dev)), sum(1 for e in dev if e.branches))
    total = 0.0
    with torch.no_grad(), autocast:
        for start in range(0, len(dev), schedule.batch_size):
            batch = dev[start : start + schedule.batch_size]
            total += float(micro_loss(model, batch, pad, device, norm, schedule, teacher))
    model.train(was_training)
    return round(total, 6)


def _resume(checkpoints: Path, model: Any, optimizer: Any, scheduler: Any) -> Progress:
    import torch

    state = torch.load(checkpoints / STATE_FILE, weights_only=False)
    _load_trainable(model, state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    progress = Progress(**state["progress"])
    progress.resumed_from = progress.step
    return progress


def _load_trainable(model: Any, weights: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    import torch

    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))
