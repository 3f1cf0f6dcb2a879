"""How varied inputs are, in one pass: mean length over all of them, distinct-n over a fixed-size sample."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from distillc.data.normalize import distinct_ngram_ratio

SAMPLE = 10_000  # texts distinct-n is measured on: its cost stays flat, and the report states the size


class Diversity:
    """Feed texts with `add`; `summary` gives distinct-1 and distinct-2 on a uniform sample of SAMPLE of them
    (a reservoir with a fixed seed, so the same inputs give the same figures), and the mean words of all."""

    def __init__(self, sample: int = SAMPLE) -> None:
        self.size = sample
        self.sample: list[str] = []
        self.seen = 0
        self.words = 0
        self._rng = random.Random(0)

    def add(self, text: str) -> None:
        self.seen += 1
        self.words += len(text.split())
        if len(self.sample) < self.size:
            self.sample.append(text)
        elif (slot := self._rng.randrange(self.seen)) < self.size:
            self.sample[slot] = text

    def summary(self) -> dict[str, Any]:
        return {
            "distinct_1": distinct_ngram_ratio(self.sample, 1),
            "distinct_2": distinct_ngram_ratio(self.sample, 2),
            "mean_words": round(self.words / max(1, self.seen), 1),
            "diversity_sample": len(self.sample),
        }


def diversity_of(texts: Iterable[str]) -> dict[str, Any]:
    diversity = Diversity()
    for text in texts:
        diversity.add(text)
    return diversity.summary()
