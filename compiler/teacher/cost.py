"""Teacher tokens and dollars: estimated before spending (plan, budget check) and counted while spending.

Token counts come from the teacher's own tokenizer for a local teacher. For an endpoint, whose
tokenizer is not at hand offline, the embedded model's tokenizer stands in (a BPE of similar
granularity), with OpenAI's per-message chat overhead; without it, 4 characters count as a token.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from distillc.errors import DistillcError
from distillc.spec.ir import SpecIR, TeacherIR
from distillc.teacher.protocol import Messages

SAMPLE = 20_000  # requests tokenized to price a plan; more are priced from their mean, with its margin
PER_MESSAGE = 3  # OpenAI chat format: tokens around each message, and the same again to prime the reply


BATCH_DISCOUNT = 0.5  # the Batch API's price, as a share of the spec's per-request prices


def usd(teacher: TeacherIR, prompt_tokens: int, completion_tokens: int) -> float:
    price = prompt_tokens * teacher.price_input_per_1m + completion_tokens * teacher.price_output_per_1m
    return price / 1e6 * (BATCH_DISCOUNT if teacher.batch else 1.0)


def has_price(teacher: TeacherIR) -> bool:
    return bool(teacher.price_input_per_1m or teacher.price_output_per_1m)


@dataclass(frozen=True)
class Estimate:
    requests: int
    input_tokens: int
    output_tokens: int
    usd: float
    tokenizer: str  # what counted the tokens
    sampled: int = 0  # requests whose prompts were tokenized, when not all were (the rest are extrapolated)
    input_margin: int = 0  # the 95% margin of input_tokens that sampling leaves

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usd": round(self.usd, 6),
            "tokenizer": self.tokenizer,
            "sampled": self.sampled or self.requests,
            "input_margin": self.input_margin,
        }


class TokenCounter:
    """Counts the prompt tokens of a chat request and the tokens of an answer."""

    def __init__(self, teacher: TeacherIR) -> None:
        self.describe, self._tokenizer = _load_tokenizer(teacher)
        self._chat_template = teacher.provider == "local" and self._tokenizer is not None
        self._fixed: dict[str, int] = {}  # the messages every request shares (instructions, examples), counted once

    def text(self, text: str) -> int:
        if self._tokenizer is None:
            return max(1, round(len(text) / 4))
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt(self, messages: Messages) -> int:
        if self._chat_template:
            # Exactly what the local teacher feeds its model: the rendered template, tokenized as text.
            return self.text(self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        *shared, own = messages
        fixed = sum(self._shared(m["content"]) for m in shared)
        return fixed + self.text(own["content"]) + PER_MESSAGE * (len(messages) + 1)

    def prompts(self, requests: list[Messages]) -> list[int]:
        """`prompt` of each request, the texts that differ tokenized in one batch (the tokenizer's threads)."""
        if self._chat_template or self._tokenizer is None or not requests:
            return [self.prompt(m) for m in requests]
        own = self._tokenizer([m[-1]["content"] for m in requests], add_special_tokens=False)["input_ids"]
        return [
            sum(self._shared(m["content"]) for m in messages[:-1]) + len(ids) + PER_MESSAGE * (len(messages) + 1)
            for messages, ids in zip(requests, own, strict=True)
        ]

    def _shared(self, text: str) -> int:
        if (count := self._fixed.get(text)) is None:
            if len(self._fixed) > 10_000:  # not so shared after all: keep memory flat
                self._fixed.clear()
            count = self._fixed[text] = self.text(text)
        return count


def _load_tokenizer(teacher: TeacherIR) -> tuple[str, Any]:
    from distillc.student.models import load_tokenizer

    ref = teacher.model if teacher.provider == "local" else "smollm2-135m-instruct"
    try:
        return (f"{ref} tokenizer", load_tokenizer(ref))
    except DistillcError:
        return ("4 characters per token", None)


def answer_tokens(spec: SpecIR, counter: TokenCounter) -> int:
    """Expected answer length: the examples' mean (plus an end token), capped by max_tokens."""
    outputs = [counter.text(e.output) + 1 for e in spec.task.examples]
    return min(spec.teacher.max_tokens, round(sum(outputs) / len(outputs)))


def generation_answer_tokens(spec: SpecIR, counter: TokenCounter) -> int:
    """Expected length of one answer of inputs.generate: `per_request` inputs as long as the examples'."""
    gen = spec.inputs.generate
    assert gen is not None
    examples = [e.input for e in spec.task.examples]
    per_input = round(sum(counter.text(e) for e in examples) / len(examples)) + 3  # quotes and comma in a list
    return gen.per_request * per_input


class Tally:
    """Tokens and dollars of requests counted as they stream past. Up to SAMPLE requests are kept (a uniform
    random sample, fixed by its seed) and tokenized at the end: with more, the input tokens are their mean
    times the count, so pricing costs the same at ten million requests as at twenty thousand."""

    def __init__(self, spec: SpecIR, counter: TokenCounter) -> None:
        self.spec, self.counter, self.size = spec, counter, SAMPLE
        self.requests = 0
        self._sample: list[Messages] = []
        self._rng = random.Random(0)

    def add(self, requests: Iterable[Messages]) -> Tally:
        for messages in requests:  # reservoir sampling: each request is kept with probability size / requests
            self.requests += 1
            if len(self._sample) < self.size:
                self._sample.append(messages)
            elif (slot := self._rng.randrange(self.requests)) < self.size:
                self._sample[slot] = messages
        return self

    def input_tokens(self) -> tuple[int, int, int]:
        """(input tokens, requests tokenized when not all were, the 95% margin that sampling leaves)."""
        counts = self.counter.prompts(self._sample)
        n, total = len(counts), self.requests
        if total <= n or n < 2:
            return sum(counts), 0, 0
        mean = sum(counts) / n  # extrapolated, with its margin (a finite population's)
        margin = 1.96 * statistics.stdev(counts) / math.sqrt(n) * math.sqrt(1 - n / total) * total
        return round(mean * total), n, round(margin)

    def estimate(self) -> Estimate:
        input_tokens, sampled, margin = self.input_tokens()
        output_tokens = answer_tokens(self.spec, self.counter) * self.requests
        cost = usd(self.spec.teacher, input_tokens, output_tokens)
        return Estimate(self.requests, input_tokens, output_tokens, cost, self.counter.describe, sampled, margin)
