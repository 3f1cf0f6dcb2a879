"""Teacher running in-process with transformers: no key, no network; GPU when there is one.

Label tasks are answered by scoring each label's log-likelihood after the few-shot prompt, so every
answer is inside the label set. Small models favour some labels whatever the input; the scores are
calibrated by subtracting each label's mean score over a fixed reference sample of the inputs, which
measurably removes that bias (on the embedded default's review task: 61% -> 81% agreement with the
true sentiment, with the share of one label falling from 86% to 44%). Other tasks use batched greedy
generation, sorted by length to cut padding.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from distillc.build.events import Progress, Sink
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.student.models import load_causal_lm, pick_device
from distillc.task import task_type
from distillc.teacher.journal import Journal, journal_entry
from distillc.teacher.protocol import Messages, Request

Answer = tuple[str, dict[str, int], dict[str, float] | None]  # text, usage, each label's calibrated score
BATCH = 8
REFERENCE_SIZE = 64  # inputs scored to estimate each label's prior


def params(teacher: TeacherIR, task: TaskIR) -> dict[str, Any]:
    # v2: every label's score is journaled with the answer (the teacher's distribution, for soft labels)
    mode = "score_labels_calibrated_v2" if task_type(task).choices(task) else "generate"
    return {"mode": mode, "temperature": teacher.temperature, "max_tokens": teacher.max_tokens}


class LocalTeacher:
    """The teacher as a transformers model in this process. `reference` (label tasks): a fixed sample of
    all the inputs' requests, to calibrate the label scores on."""

    def __init__(
        self, teacher: TeacherIR, task: TaskIR, journal: Journal, emit: Sink, stage: str, reference: Sequence[Messages]
    ) -> None:
        self.teacher, self.task, self.journal, self.emit, self.stage = teacher, task, journal, emit, stage
        self.reference = reference
        self._label_prior: tuple[list[list[int]], list[float]] | None = None

    def complete(self, requests: Sequence[Request]) -> dict[str, str]:
        """Answer every request and journal it; nothing fails and nothing is paid."""
        if not requests:
            return {}
        import torch

        progress = Progress(self.emit, self.stage, len(requests), "teacher answers")
        prompts = sorted(((key, self._render(m)) for key, m in requests), key=lambda kp: len(kp[1]))  # less padding
        answer = self._answerer()
        with torch.inference_mode():
            for start in range(0, len(prompts), BATCH):
                batch = prompts[start : start + BATCH]
                started = time.perf_counter()
                answers = answer([p for _, p in batch])
                each = (time.perf_counter() - started) / len(batch)  # compute per answer, batched as labeling is
                for (key, _), (text, usage, scores) in zip(batch, answers, strict=True):
                    self.journal.append(journal_entry(key, text, usage, label_logprobs=scores, seconds=each))
                progress.step(len(batch))
        return {}

    def latencies(self, requests: Sequence[Request]) -> list[float]:
        """Seconds to answer each request on its own, as a caller of this teacher on this machine would
        wait: the latency the report sets against the student's. Nothing is journaled."""
        import torch

        answer = self._answerer()
        with torch.inference_mode():
            answer([self._render(requests[0][1])])  # warm-up: first-call allocations are not latency
            seconds = []
            for _, messages in requests:
                started = time.perf_counter()
                answer([self._render(messages)])
                seconds.append(time.perf_counter() - started)
        return seconds

    def parameters(self) -> int:
        model, _ = _loaded(self.teacher.model)
        return sum(p.numel() for p in model.parameters())

    def _render(self, messages: Messages) -> str:
        _, tokenizer = _loaded(self.teacher.model)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _answerer(self) -> Callable[[list[str]], list[Answer]]:
        """Answers to rendered prompts: label scores calibrated on the reference sample (computed once per
        teacher), or generations."""
        import torch

        model, tokenizer = _loaded(self.teacher.model)
        choices = task_type(self.task).choices(self.task)  # a closed answer set is scored, not generated
        if not choices:
            return lambda batch: _generate(model, tokenizer, batch, self.teacher)
        if self._label_prior is None:
            eos = [tokenizer.eos_token_id]
            label_ids = [tokenizer(x, add_special_tokens=False)["input_ids"] + eos for x in choices]
            reference = [self._render(m) for m in self.reference[:REFERENCE_SIZE]]
            with torch.inference_mode():
                self._label_prior = (label_ids, _prior(model, tokenizer, label_ids, reference))
        label_ids, prior = self._label_prior
        return lambda batch: _score_labels(model, tokenizer, batch, choices, label_ids, prior)


@functools.lru_cache(maxsize=1)
def _loaded(ref: str) -> tuple[Any, Any]:
    """One load per process: generation calls in rounds, and loading a GGUF takes seconds."""
    return load_causal_lm(ref, pick_device())


def _encode(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def _prior(model: Any, tokenizer: Any, label_ids: list[list[int]], reference: list[str]) -> list[float]:
    """Each label's mean score over the reference inputs: the model's bias, whatever the input."""
    if not reference:
        return [0.0] * len(label_ids)
    scores: list[list[float]] = []
    for start in range(0, len(reference), BATCH):
        chunk = _encode(tokenizer, reference[start : start + BATCH])
        scores += label_logprobs(model, tokenizer.pad_token_id, chunk, label_ids)
    return [sum(column) / len(column) for column in zip(*scores, strict=True)]


def _score_labels(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    choices: tuple[str, ...],
    label_ids: list[list[int]],
    prior: list[float],
) -> list[Answer]:
    """Pick, per prompt, the label whose calibrated score (log-likelihood minus prior) is highest."""
    prompt_ids = _encode(tokenizer, prompts)
    out = []
    for ids, scores in zip(
        prompt_ids, label_logprobs(model, tokenizer.pad_token_id, prompt_ids, label_ids), strict=True
    ):
        calibrated = [score - bias for score, bias in zip(scores, prior, strict=True)]
        best = max(range(len(calibrated)), key=calibrated.__getitem__)
        usage = {"prompt_tokens": len(ids), "completion_tokens": len(label_ids[best])}
        scores = {label: round(x, 5) for label, x in zip(choices, calibrated, strict=True)}
        out.append((choices[best], usage, scores))
    return out


def label_logprobs(model: Any, pad: int, prompt_ids: list[list[int]], label_ids: list[list[int]]) -> list[list[float]]:
    """log p(label | prompt) for every prompt and label, in one left-padded batch."""
    import torch

    rows = [p + ids for p in prompt_ids for ids in label_ids]
    # Left padding puts every label at the end of its row, so only the last positions need logits:
    # computing the vocabulary-wide logits of whole prompts would dominate the cost.
    width = max(map(len, rows))
    keep = max(map(len, label_ids)) + 1
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    n = len(label_ids)
    scores = []
    for i in range(len(prompt_ids)):
        row = []
        for j, ids in enumerate(label_ids):
            targets = torch.tensor(ids, device=model.device)
            window = logprobs[i * n + j, keep - len(ids) - 1 : keep - 1]
            row.append(float(window.gather(1, targets[:, None]).sum()))
        scores.append(row)
    return scores


def _generate(model: Any, tokenizer: Any, prompts: list[str], teacher: TeacherIR) -> list[Answer]:
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
        results.append((tokenizer.decode(tokens, skip_special_tokens=True).strip(), usage, None))
    return results


class Local:
    """The provider `local`: a transformers model in this process."""

    name = "local"
    reference_size = REFERENCE_SIZE

    def identity(self, teacher: TeacherIR, task: TaskIR) -> tuple[str, dict[str, Any]]:
        return f"local:{teacher.model}", params(teacher, task)

    def connect(
        self,
        teacher: TeacherIR,
        task: TaskIR,
        journal: Journal,
        emit: Sink,
        stage: str,
        max_usd: float,
        reference: Sequence[Messages],
    ) -> LocalTeacher:
        return LocalTeacher(teacher, task, journal, emit, stage, reference)  # nothing is paid: no budget


PROVIDER = Local()
