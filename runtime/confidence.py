"""How sure the package is of an answer: each decoded token's log-probability, and one score per answer.

Log-probabilities are taken from the distribution the package actually decodes from: over the tokens its
constraint allows at that step (a label task's label set, a JSON task's schema), over the whole vocabulary
for free text. A token the constraint forces (the only one allowed, or a label already settled) has
log-probability 0.

An answer's confidence is one number in [0, 1] built from its steps' log-probabilities (`SCORES`):
- `sum`: the answer's probability. For a label task that is the probability of the chosen label normalized
  over the label set (the constrained steps' probabilities multiply to it, and they sum to 1 over labels);
- `mean`: the geometric mean of the steps' probabilities (length-normalized);
- `min`: the least sure step's probability.
A label task always uses `sum`; for JSON and text the build measures which one best ranks the student's
disagreements with its teacher, and the package is told which (package.json `confidence.score`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SCORES = ("sum", "mean", "min")
ROUTE_HEADER = "X-Distillc-Route"  # the response header that says who answered (Answer.route)
Alternatives = tuple[tuple[int, float], ...]  # (token, log-probability), likeliest first


def score(logprobs: Sequence[float], how: str) -> float:
    """An answer's confidence from its steps' log-probabilities (see the module's docstring)."""
    if not logprobs:
        return 1.0  # nothing was decided: no step could have gone otherwise
    if how == "sum":
        total = math.fsum(logprobs)
    elif how == "mean":
        total = math.fsum(logprobs) / len(logprobs)
    elif how == "min":
        total = min(logprobs)
    else:
        raise ValueError(f"unknown confidence score {how!r}; one of {', '.join(SCORES)}")
    return math.exp(total)


def pick(logits: np.ndarray, top: int = 0) -> tuple[int, float, Alternatives]:
    """Greedy choice among `logits` (disallowed entries at -inf): its index, its log-probability under the
    softmax of `logits`, and the `top` likeliest indexes with theirs."""
    import numpy as np  # here: the compiler imports this module where numpy must not load (`distillc plan`)

    chosen = int(np.argmax(logits))
    shifted = np.asarray(logits, dtype=np.float64) - float(logits[chosen])  # the largest is 0: exp cannot overflow
    log_total = float(np.log(np.exp(shifted).sum()))
    alternatives: Alternatives = ()
    if top:
        k = min(top, len(shifted))
        likeliest = np.argpartition(-shifted, k - 1)[:k]
        likeliest = likeliest[np.argsort(-shifted[likeliest], kind="stable")]
        alternatives = tuple((int(i), float(shifted[i]) - log_total) for i in likeliest if np.isfinite(shifted[i]))
    return chosen, -log_total, alternatives


@dataclass(frozen=True)
class Answer:
    """One request's answer as the model gave it.

    `token_ids` are the answer's tokens (without the end-of-sequence token); `logprobs` has one entry per
    decoded step, so one more than `token_ids` when the answer ended on end-of-sequence; `top` holds each
    step's likeliest alternatives when they were asked for."""

    text: str
    tokens: int = 0  # tokens generated (the server's token counter)
    confidence: float = 1.0
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    top: tuple[Alternatives, ...] = field(default=())
    route: str = "student"  # who answered: student, teacher, or fallback (the student, the teacher failing)

    def scored(self, how: str) -> float:
        return score(self.logprobs, how)
