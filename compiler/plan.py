"""`distillc plan`: what a build would do and what the teacher would cost, before anything is spent.

Nothing is sent to the teacher and nothing is trained. With `inputs.source` the inputs stage runs (it
only reads the file) so that the requests priced are the real ones; inputs still to be generated are
priced from the generation prompts, with the task's example inputs standing in for the unseen ones.

A plan is read-only and safe beside a running build: it reads the journal without touching it, runs an
uncached inputs stage in a folder of its own rather than the build's cache, and says when a build holds
the folder's lock (its figures are then those from before that build).
"""

from __future__ import annotations

import atexit
import random
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distillc.api import default_build_dir, previous_stages
from distillc.build.events import Sink, null_sink
from distillc.build.lock import lock_holder
from distillc.build.runner import StageRecord, cached_record, plan_stages, run_stages
from distillc.graph import STAGES
from distillc.spec import SpecIR, load_spec
from distillc.stages import inputs as inputs_stage
from distillc.stages.label import survey
from distillc.task.prompts import label_messages
from distillc.teacher.cost import Estimate, Tally, TokenCounter, answer_tokens, generation_answer_tokens, usd
from distillc.teacher.generation import generation_teacher
from distillc.teacher.generation import messages as generation_messages
from distillc.teacher.journal import JournalView, journal_path


@dataclass
class Plan:
    spec: SpecIR
    build_dir: Path
    stages: list[tuple[str, str, str]]  # (stage, "cached" | "to run", why)
    teacher: Estimate | None = None  # None when labeling is cached
    journaled: int = 0  # answers already paid for, not sent again
    imported: int = 0  # inputs answered by the answers imported with them: never sent
    notes: list[str] = field(default_factory=list)
    spent_usd: float = 0.0  # paid already, by every run in this build folder; the budget covers it too

    @property
    def over_budget(self) -> bool:
        limit = self.spec.budget.max_usd
        return bool(limit and self.teacher and self.spent_usd + self.teacher.usd > limit)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "stages": [{"name": n, "status": s, "reason": r} for n, s, r in self.stages],
            "teacher": self.teacher.as_dict() if self.teacher else None,
            "journaled": self.journaled,
            "imported": self.imported,
            "budget_usd": self.spec.budget.max_usd or None,
            "over_budget": self.over_budget,
        }


def plan(spec_path: str | Path, out: str | Path | None = None, emit: Sink = null_sink) -> Plan:
    spec = load_spec(spec_path)
    build_dir = Path(out) if out else default_build_dir(spec)
    previous = previous_stages(build_dir)
    inputs, notes = None, []
    if spec.inputs.mode == "source":  # reading the source file is free: price the real requests
        inputs, notes = inputs_record(spec, build_dir, emit)
    rows = plan_stages(STAGES, spec, build_dir, previous, known={"inputs": inputs} if inputs else None)
    result = Plan(spec, build_dir, rows, notes=notes)
    if (holder := lock_holder(build_dir)) is not None:
        result.notes.append(
            f"a build is running in {build_dir}" + (f" (pid {holder})" if holder else "")
            + ": this plan shows the folder as it was before that build"
        )  # fmt: skip
    status = {name: state for name, state, _ in rows}
    if status["label"] == "cached":
        return result
    counter = TokenCounter(spec.teacher)
    with JournalView(journal_path(build_dir)) as journal:
        result.spent_usd = journal.totals().spent_usd
        # Inputs still to be generated: price generating them, and labeling unseen inputs.
        if inputs is None and status["inputs"] == "to run":
            result.teacher = _generation_estimate(spec, counter)
            result.notes.append(
                f"inputs: {spec.inputs.generate.count} to generate; labeling them is priced with the task's "  # type: ignore[union-attr]
                "example inputs standing in for the unseen ones"
            )
            return result
        if inputs is None:  # generated inputs, cached: a hit, nothing is sent
            inputs, _ = inputs_record(spec, build_dir, emit)
        counted = survey(spec, inputs.artifact / "inputs.jsonl", journal, 0, counter)
    result.imported = counted.imported
    result.journaled = counted.inputs - counted.imported - counted.pending
    result.teacher = counted.planned
    return result


def inputs_record(spec: SpecIR, build_dir: Path, emit: Sink) -> tuple[StageRecord, list[str]]:
    """The inputs stage's record, and notes on how it differs from the build's: the build's cached artifact
    when there is one, else the stage run in a scratch folder, so the build's cache (which a running build
    may be writing) is never touched. There only exact duplicates are dropped: finding near duplicates costs
    about as much as the rest of a plan, and dropping them can only lower the price, so it is an upper bound."""
    if cached := cached_record(inputs_stage.STAGE, spec, build_dir):
        return cached, []
    notes = []
    if spec.inputs.dedup == "near":
        spec = replace(spec, inputs=replace(spec.inputs, dedup="exact"))
        notes.append("inputs: near duplicates not yet dropped, so the build may send fewer requests than these")
    scratch = Path(tempfile.mkdtemp(prefix="distillc-plan-"))
    atexit.register(shutil.rmtree, scratch, True)
    [record] = run_stages(STAGES, spec, scratch, emit, None, until="inputs")
    return record, notes


def _generation_estimate(spec: SpecIR, counter: TokenCounter) -> Estimate:
    """Requests to write `count` inputs (if none were rejected), then to label them: the task's examples in
    turn stand in for the inputs not yet written."""
    gen = spec.inputs.generate
    assert gen is not None
    rng = random.Random(gen.seed)
    n_requests = min(gen.max_requests, -(-gen.count // gen.per_request))
    writing = Tally(spec, counter).add(generation_messages(gen, rng, []) for _ in range(n_requests))
    writing_input, sampled, margin = writing.input_tokens()
    writing_output = n_requests * generation_answer_tokens(spec, counter)
    per_example = counter.prompts([label_messages(spec.task, e.input) for e in spec.task.examples])
    rounds, rest = divmod(gen.count, len(per_example))
    label_input = rounds * sum(per_example) + sum(per_example[:rest])
    label_output = gen.count * answer_tokens(spec, counter)
    return Estimate(
        n_requests + gen.count,
        writing_input + label_input,
        writing_output + label_output,
        usd(generation_teacher(spec), writing_input, writing_output) + usd(spec.teacher, label_input, label_output),
        counter.describe,
        sampled,
        margin,
    )


def render(p: Plan) -> str:
    width = max(len(n) for n, _, _ in p.stages)
    lines = [f"plan for {p.spec.name} ({p.build_dir})", ""]
    lines += [f"  {n:<{width}}  {s:<7} {r}".rstrip() for n, s, r in p.stages]
    lines.append("")
    t = p.teacher
    teacher = p.spec.teacher
    if t is None:
        lines.append("teacher: labels cached, nothing to send")
    else:
        had = [f"{p.imported} answered by the answers imported with them"] if p.imported else []
        had += [f"{p.journaled} already answered in the journal"] if p.journaled else []
        lines.append(
            f"teacher: {t.requests} requests to send to {teacher.model}" + (f" ({'; '.join(had)})" if had else "")
        )
        counted = f"counted with {t.tokenizer}"
        if t.sampled:
            share = t.input_margin / max(t.input_tokens, 1)
            counted += f" on {t.sampled:,} of {t.requests:,} requests, ±{share:.1%} at 95%"
        lines.append(f"tokens:  ~{t.input_tokens:,} input + ~{t.output_tokens:,} output ({counted})")
        if teacher.price_input_per_1m or teacher.price_output_per_1m:
            lines.append(
                f"cost:    ~${t.usd:.4f} at ${teacher.price_input_per_1m:g} / ${teacher.price_output_per_1m:g}"
                " per 1M input / output tokens" + (", labels at half that (Batch API)" if teacher.batch else "")
            )
        else:
            lines.append("cost:    no price set (teacher.price_per_1m_tokens)")
    lines += p.notes
    if p.spent_usd:
        lines.append(f"spent:   ${p.spent_usd:.4f} already, in this build folder's journal")
    if p.spec.budget.max_usd:
        verdict = "OVER BUDGET: build would refuse" if p.over_budget else "within budget"
        lines.append(f"budget:  ${p.spec.budget.max_usd:g}, {verdict}")
    return "\n".join(lines)
