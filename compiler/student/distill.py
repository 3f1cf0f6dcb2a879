"""Soft-label distillation for label tasks: the student learns the teacher's distribution over the labels.

The package answers a label task by walking a trie of the labels' token sequences and taking, at each
branch, the allowed token with the highest logit (runtime/constrain.py). So the distribution the student
learns is the one that decision reads: at every branch on the answer's path, the softmax of the student's
logits over the branch's tokens, pulled towards the teacher's probability of each branch (the labels below
it) by a KL divergence weighted by the teacher's probability of reaching that branch. Labels whose first
tokens differ branch once, at the answer's first token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Branch:
    """One branch point on an answer's path: the row position whose logits choose the next token, the tokens
    the labels go on with there, the teacher's probability of each, and of reaching this point at all."""

    position: int
    tokens: tuple[int, ...]
    probs: tuple[float, ...]
    weight: float


def branches(sequences: dict[str, list[int]], label: str, soft: dict[str, float], answer_start: int) -> list[Branch]:
    """The branch points of `label`'s path through the trie of `sequences` (each label's trained tokens),
    with the teacher's distribution `soft`; `answer_start` is where the answer's first token sits in the row."""
    path = sequences[label]
    out = []
    for k in range(len(path)):
        under = [name for name, seq in sequences.items() if seq[:k] == path[:k] and len(seq) > k]
        tokens = sorted({sequences[name][k] for name in under})
        reach = sum(soft.get(name, 0.0) for name in under)
        if len(tokens) < 2 or reach <= 0:
            continue
        probs = [sum(soft.get(name, 0.0) for name in under if sequences[name][k] == t) / reach for t in tokens]
        out.append(Branch(answer_start + k - 1, tuple(tokens), tuple(probs), reach))
    return out


def kd_sum(pairs: list[tuple[Any, Branch]]) -> Any:
    """Sum of weight * KL(teacher || student over the branch's tokens), for each branch with the student's
    logits (a vocabulary-sized vector) at its position. The caller divides by the rows with branches in
    the whole step."""
    import torch

    total = torch.zeros((), dtype=torch.float32)
    for logits, b in pairs:
        student = torch.log_softmax(logits[list(b.tokens)].float(), dim=-1)
        teacher = torch.tensor(b.probs, dtype=student.dtype, device=student.device)
        kl = torch.where(teacher > 0, teacher * (torch.log(teacher.clamp_min(1e-12)) - student), 0.0).sum()
        total = total.to(kl.device) + b.weight * kl
    return total
