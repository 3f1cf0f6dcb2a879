"""Write new inputs with the teacher: few-shot prompts from the task's examples, parsed, deduplicated.

Requests go out in rounds of as many as could fill the count, at most ROUND_SIZE: numbers of the spec
alone, so what is generated never depends on how many requests run at once (`max_concurrency` of each
round are in flight). Each request shows 3-5 examples,
rotated and shuffled by the seed, plus up to two inputs generated earlier (as Self-Instruct does) so
later rounds spread out. Every answer is journaled like labels: a re-run after a crash replays the same
rounds from the journal and pays only for what was never answered.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from distillc.build.events import Event, Sink
from distillc.data.diversity import diversity_of
from distillc.errors import DistillcError
from distillc.spec.ir import GenerateIR, SpecIR, TeacherIR
from distillc.teacher import client
from distillc.teacher.cost import usd
from distillc.teacher.journal import Journal, request_key
from distillc_runtime.answers import strip_fence

if TYPE_CHECKING:
    from distillc.data.dedup import NearDuplicateIndex

MAX_CHARS = 2000
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")

ROUND_SIZE = 8


@dataclass
class Generated:
    inputs: list[str] = field(default_factory=list)
    requests: int = 0
    sent: int = 0  # requests not found in the journal
    proposed: int = 0  # candidate inputs parsed from answers
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    usd: float = 0.0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        return {
            "generated": len(self.inputs),
            "requests": self.requests,
            "requests_sent": self.sent,
            "proposed": self.proposed,
            "rejected": dict(sorted(self.rejected.items())),
            "duplicate_rate": round(
                sum(v for k, v in self.rejected.items() if "duplicate" in k or "example" in k) / max(1, self.proposed),
                4,
            ),
            **diversity_of(self.inputs),
            "usage": self.usage,
            "usd": round(self.usd, 6),
        }


def generation_teacher(spec: SpecIR) -> TeacherIR:
    """The teacher, sampling for variety and allowed long enough answers for a batch of inputs; never
    through the Batch API (each round waits on the last), so priced in full."""
    gen = spec.inputs.generate
    assert gen is not None
    room = min(4096, 100 * gen.per_request)  # about 100 tokens an input, with the JSON around them
    return replace(
        spec.teacher, temperature=gen.temperature, max_tokens=max(spec.teacher.max_tokens, room), batch=False
    )


def messages(gen: GenerateIR, rng: random.Random, pool: list[str]) -> list[dict[str, str]]:
    examples = list(gen.example_inputs)
    rng.shuffle(examples)
    shown = examples[: rng.randint(min(3, len(examples)), min(5, len(examples)))]
    if pool:
        shown += rng.sample(pool, k=min(2, len(pool)))
        rng.shuffle(shown)
    guidance = f"\n\nWhat the inputs should cover: {gen.guidance}" if gen.guidance else ""
    listed = "\n".join(f"- {json.dumps(e, ensure_ascii=False)}" for e in shown)
    return [
        {
            "role": "system",
            "content": "You write realistic inputs for a text-processing task, the kind real users and systems "
            f"produce.\n\nThe task: {gen.instructions}{guidance}",
        },
        {
            "role": "user",
            "content": f"Inputs of this kind look like:\n{listed}\n\nWrite {gen.per_request} new inputs. Make them "
            "differ from these and from each other in topic, length, tone and wording, as natural as real "
            "ones. Do not copy or paraphrase the examples, and do not answer the task. "
            "Reply with a JSON array of strings and nothing else.",
        },
    ]


def parse(answer: str) -> list[str]:
    """Inputs from an answer: a JSON array of strings, or failing that one per line (bullets stripped)."""
    text = strip_fence(answer.strip())
    start, end = text.find("["), text.rfind("]")
    if start != -1 and end > start:
        try:
            value = json.loads(text[start : end + 1])
        except ValueError:
            value = None
        if isinstance(value, list):
            return [str(v).strip() for v in value if isinstance(v, str | int | float) and str(v).strip()]
    lines = [_BULLET.sub("", line).strip().strip('"').strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith(("[", "]", "```"))]


def generate(spec: SpecIR, journal: Journal, emit: Sink) -> Generated:
    """Rounds of requests until `count` inputs are kept or `max_requests` are spent.

    A round's prompts show inputs of earlier rounds, so a round with a failed request ends generation
    (E407): going on would make later prompts depend on what failed, and a re-run, in which it may
    succeed, would then ask different questions and pay for them again. Re-run to go on from there.
    """
    gen = spec.inputs.generate
    assert gen is not None
    teacher = generation_teacher(spec)
    task = replace(spec.task, output_type="text")  # free text answers: a local teacher generates
    model_id, params = client.identity(teacher, task)
    asking = client.connect(teacher, task, journal, emit, "inputs", spec.budget.max_usd)
    rng = random.Random(gen.seed)
    from distillc.data.dedup import NearDuplicateIndex  # numpy: not for `plan`, which imports this module

    index = NearDuplicateIndex(spec.inputs.dedup)
    examples = NearDuplicateIndex()  # an input too close to an example teaches nothing new, whatever dedup says
    for example in gen.example_inputs:
        examples.add(example)
    result = Generated()
    while len(result.inputs) < gen.count and result.requests < gen.max_requests:
        batch = []
        needed = -(-(gen.count - len(result.inputs)) // gen.per_request)  # requests that could fill the count
        for _ in range(min(ROUND_SIZE, needed, gen.max_requests - result.requests)):
            m = messages(gen, rng, result.inputs)
            batch.append((request_key(model_id, m, params | {"round_seed": rng.random()}), m))
        result.requests += len(batch)
        answered = journal.answered(k for k, _ in batch)
        pending = [(k, m) for k, m in batch if k not in answered]
        result.sent += len(pending)
        failures = asking.complete(pending)
        if failures:
            _stop(failures, len(pending))
        entries = journal.get_many(k for k, _ in batch)
        for key, _ in batch:
            entry = entries[key]  # every request of the round was answered
            for name in result.usage:
                result.usage[name] += int(entry.get("usage", {}).get(name, 0))
            for candidate in parse(entry["text"]):
                result.proposed += 1
                reason = _problem(candidate, index, examples)
                if reason:
                    result.reject(reason)
                elif len(result.inputs) < gen.count:
                    index.add(candidate)
                    result.inputs.append(" ".join(candidate.split()))
        emit(Event("progress", "inputs", f"{len(result.inputs)}/{gen.count} inputs after {result.requests} requests"))
    result.usd = usd(teacher, result.usage["prompt_tokens"], result.usage["completion_tokens"])
    return result


def _stop(failures: dict[str, str], sent: int) -> None:
    first = next(iter(failures.values()))
    raise DistillcError(
        "E407",
        f"{len(failures)} of {sent} requests of a generation round failed (first: {first}); later rounds "
        "build on this round's answers, so generation stops here",
        help="the answers received are journaled; re-run to go on from this round without paying again",
    )


def _problem(text: str, index: NearDuplicateIndex, examples: NearDuplicateIndex) -> str:
    if len(text) > MAX_CHARS:
        return "too long"
    if examples.check(text):
        return "too close to an example"
    return index.check(text)
