"""Label every input with the teacher, under the output contract, CHUNK inputs at a time.

Answers come from the journal when already paid for; only the missing ones are sent. A first pass over the
inputs counts what is missing (and, with a budget, what it should cost) before anything is sent; the second
builds each chunk's requests, sends what the journal lacks, and writes the chunk's rows. Memory holds one
chunk, whatever the number of inputs.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.quality.answers import AnswerTally
from distillc.spec.ir import SpecIR
from distillc.task import accept, task_type
from distillc.task.prompts import label_messages, reask_messages
from distillc.teacher import client
from distillc.teacher.budget import refuse_over_estimate
from distillc.teacher.cost import Estimate, Tally, TokenCounter, has_price, usd
from distillc.teacher.journal import Answers, Journal, imported_entry, journal_path, request_key, request_keys
from distillc.teacher.protocol import Request, TeacherClient
from distillc.teacher.soft_labels import label_distribution
from distillc.teacher.speed import LATENCY_PROBES, TeacherSpeed

CHUNK = 20_000  # inputs labeled at a time: their requests and answers are what labeling holds in memory


def teacher_requests(spec: SpecIR, items: list[dict[str, Any]]) -> list[Request]:
    """One chat request per input, keyed by what the answer depends on (model, messages, parameters)."""
    key = request_keys(*client.identity(spec.teacher, spec.task))
    requests = []
    for item in items:
        messages = label_messages(spec.task, item["input"])
        requests.append((key(messages), messages))
    return requests


def unanswered(requests: list[Request], journal: Answers) -> list[Request]:
    """The requests the journal has no answer for, each once."""
    answered = journal.answered(key for key, _ in requests)
    return list({key: (key, m) for key, m in requests if key not in answered}.values())


def input_chunks(path: Path, size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    """The inputs artifact, `size` rows at a time."""
    chunk: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                chunk.append(orjson.loads(line))
                if len(chunk) == size:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


@dataclass
class Survey:
    """What labeling will do, counted before anything is sent."""

    inputs: int = 0
    imported: int = 0  # inputs whose imported answer settles them (used, or dead-lettered): never asked
    pending: int = 0
    sample: list[Request] = field(default_factory=list)  # the requests of smallest key: a fixed sample
    planned: Estimate | None = None  # what sending the pending requests should cost, when it is capped


def survey(spec: SpecIR, path: Path, journal: Answers, sample_size: int, counter: TokenCounter | None) -> Survey:
    """One pass over the inputs: how many the journal answers, a fixed sample, and (with a `counter`) what
    sending the rest should cost."""
    result = Survey()
    tally = Tally(spec, counter) if counter is not None else None
    for chunk in input_chunks(path):
        asked = to_ask(spec, chunk)
        requests = teacher_requests(spec, asked)
        pending = unanswered(requests, journal)
        result.inputs += len(chunk)
        result.imported += len(chunk) - len(asked)
        result.pending += len(pending)
        result.sample = heapq.nsmallest(sample_size, result.sample + requests, key=lambda r: r[0])
        if tally is not None:
            tally.add(m for _, m in pending)
    result.planned = tally.estimate() if tally is not None else None
    return result


@dataclass
class Outcome:
    """What labeling did, summed over the chunks."""

    labeled: int = 0
    fixed: int = 0
    failed: int = 0
    invalid: int = 0
    reasked: int = 0
    sent: int = 0
    soft: int = 0
    imported: int = 0  # inputs labeled by an answer imported with them
    imported_invalid: int = 0  # imported answers that broke the output contract: dead-lettered
    imported_reasked: int = 0  # ... and asked of the teacher instead (reask_invalid)
    imports_journaled: int = 0  # imported answers new to the journal in this run
    gold: int = 0  # labeled inputs with a human label
    gold_invalid: int = 0  # human labels outside the output contract: dropped
    failed_requests: int = 0  # requests that failed after every retry, re-asks included
    first_failure: str = ""  # the first request's failure (E402)
    first_dead: str = ""  # the first input that got no valid answer (E403)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    distribution: Counter[str] = field(default_factory=Counter)
    answers: AnswerTally = field(default_factory=AnswerTally)  # is one answer most of them? (before training)
    dead_letter: list[dict[str, Any]] = field(default_factory=list)  # the first ten, for the report


def run(ctx: StageContext, inputs: Path) -> dict[str, Any]:
    spec = ctx.spec
    teacher = spec.teacher
    path = inputs / "inputs.jsonl"
    with Journal(journal_path(ctx.build_dir)) as journal:
        if journal.skipped:
            lines = ", ".join(map(str, journal.skipped[:10])) + (" …" if len(journal.skipped) > 10 else "")
            ctx.log(
                f"warning: {len(journal.skipped)} journal lines skipped while importing teacher.jsonl (torn, "
                f"or not an answer): {lines}"
            )
        # A fixed sample of all inputs (by key, not by what is pending) calibrates a local teacher's label
        # scores, so an interrupted and resumed run calibrates exactly as an uninterrupted one.
        sample_size = max(client.reference_size(teacher), LATENCY_PROBES)
        capped = bool(spec.budget.max_usd and has_price(spec.teacher))
        plan = survey(spec, path, journal, sample_size, TokenCounter(teacher) if capped else None)
        ctx.log(
            f"{plan.imported} answers imported, {plan.inputs - plan.imported - plan.pending} from the journal, "
            f"{plan.pending} to request"
        )
        refuse_over_estimate(spec, plan.planned, journal.totals().spent_usd)
        reference = [m for _, m in plan.sample[: client.reference_size(teacher)]]
        asking = client.connect(teacher, spec.task, journal, ctx.emit, ctx.stage, spec.budget.max_usd, reference)
        done, speed = Outcome(), TeacherSpeed()
        with (ctx.workdir / "labeled.jsonl").open("wb") as rows, (ctx.workdir / "dead_letter.jsonl").open("wb") as dead:
            for chunk in input_chunks(path):
                _label_chunk(spec, chunk, journal, asking, plan.inputs, done, speed, rows, dead)
        teacher_speed = speed.summary(asking, plan.sample)
    if not done.labeled:
        raise DistillcError(
            "E403",
            f"the teacher gave no valid answer for any of {plan.inputs} inputs (first: {done.first_dead})",
            help="the answers are journaled and will not be paid for again; check the teacher and the task",
        )
    ctx.log(
        f"{done.labeled} labeled ({done.imported} by imported answers, {done.fixed} after a re-ask), "
        f"{done.invalid} invalid, {done.failed} failed"
    )
    return {
        "failed": done.failed,
        "rejected": done.invalid,
        "reasked": done.reasked,
        "fixed_by_reask": done.fixed,
        "dead_letter": done.dead_letter,
        "usd": round(usd(teacher, done.usage["prompt_tokens"], done.usage["completion_tokens"]), 6),
        "labeled": done.labeled,
        "imported": {
            "labeled": done.imported,
            "invalid": done.imported_invalid,
            "asked_instead": done.imported_reasked,
            "new_to_journal": done.imports_journaled,
        },
        "gold": {"labeled": done.gold, "invalid": done.gold_invalid},
        "soft_labels": done.soft,
        "requests_sent": done.sent,
        "usage": done.usage,
        "distribution": dict(sorted(done.distribution.items())),
        "answers": done.answers.summary(),
        "teacher": teacher_speed,
    }


def _label_chunk(
    spec: SpecIR,
    chunk: list[dict[str, Any]],
    journal: Journal,
    asking: TeacherClient,
    total: int,
    done: Outcome,
    speed: TeacherSpeed,
    rows: IO[bytes],
    dead: IO[bytes],
) -> None:
    """Send what the journal lacks for one chunk (and re-ask its invalid answers once), then write its rows in
    the chunk's order; imported answers are judged by the same contract and never sent."""
    choices = task_type(spec.task).choices(spec.task)
    settled = _settle_imports(spec, chunk, journal, done)
    asked = [_carried(item) for n, item in enumerate(chunk) if n not in settled]
    requests = teacher_requests(spec, asked)
    pending = unanswered(requests, journal)
    failures = asking.complete(pending)
    _check(spec, done, failures, done.sent + len(pending), total)
    # Invalid answers get one more try, with the answer and what is wrong with it in the conversation.
    answers = journal.get_many(key for key, _ in requests)  # the first answers, read once
    reasks = reask_requests(spec, requests, answers)
    pending_reasks = unanswered(list(reasks.values()), journal)
    more = asking.complete(pending_reasks)
    _check(spec, done, more, done.sent + len(pending) + len(pending_reasks), total)
    failures |= more
    done.reasked += len(reasks)
    done.sent += len(pending) + len(pending_reasks)
    answers |= journal.get_many(key for key, _ in reasks.values())
    speed.add(answers[key] for key, _ in requests if key in answers)
    teacher_rows = iter(zip(asked, requests, strict=True))
    for n in range(len(chunk)):
        if n in settled:
            row, answered_by = settled[n]
        else:
            item, (key, _) = next(teacher_rows)
            row, answered_by = _judge(spec, item, key, answers, reasks, failures, done)
        if answered_by is None:
            dead.write(orjson.dumps(row) + b"\n")
            if len(done.dead_letter) < 10:
                done.dead_letter.append(
                    {
                        "input": row["input"][:200],
                        "kind": row["kind"],
                        "reason": row["reason"][:300],
                        "answer": row.get("answer", "")[:200],
                    }
                )
            continue
        if choices and answered_by in answers and (soft := label_distribution(choices, answers[answered_by])):
            row["soft"] = {label: round(p, 6) for label, p in soft.items()}
            done.soft += 1
        if "gold" in row:  # a human label, normalized as answers are; one outside the contract is dropped
            gold, _ = accept(spec.task, row.pop("gold"))
            done.gold += gold is not None
            done.gold_invalid += gold is None
            row |= {"gold": gold} if gold is not None else {}
        rows.write(orjson.dumps(row) + b"\n")
        done.labeled += 1
        done.answers.add(row["output"] if isinstance(row["output"], str) else orjson.dumps(row["output"]).decode())
        if choices:
            done.distribution[row["output"]] += 1


def to_ask(spec: SpecIR, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inputs the teacher is asked about: those without an imported answer, and those whose imported
    answer breaks the output contract when their source says `reask_invalid`."""
    return [
        item
        for item in chunk
        if "answer" not in item or (item.get("reask_invalid") and accept(spec.task, item["answer"])[0] is None)
    ]


def _settle_imports(
    spec: SpecIR, chunk: list[dict[str, Any]], journal: Journal, done: Outcome
) -> dict[int, tuple[dict[str, Any], str | None]]:
    """Journal the chunk's imported answers (with where they came from) and judge them by the task's contract:
    by position in the chunk, the row of each that settles its input (a label, or a dead letter and None).
    An invalid answer whose source says `reask_invalid` settles nothing: its input is asked."""
    if entries := [imported_entry(item) for item in chunk if "answer" in item]:
        done.imports_journaled += journal.add_imported(entries)
    settled: dict[int, tuple[dict[str, Any], str | None]] = {}
    for n, item in enumerate(chunk):
        if "answer" not in item:
            continue
        bare = _carried(item)
        target, reason = accept(spec.task, item["answer"])
        if target is not None:
            done.imported += 1
            settled[n] = ({**bare, "output": target}, "import")
        elif not item.get("reask_invalid"):
            done.imported_invalid += 1
            where = f"{item['from']['file']}:{item['from']['line']}"
            row = {**bare, "kind": "invalid", "answer": item["answer"], "reason": f"imported ({where}): {reason}"}
            settled[n] = (_dead(done, row), None)
        else:
            done.imported_reasked += 1
            item.pop("answer")  # asked as any other input
    return settled


def _carried(item: dict[str, Any]) -> dict[str, Any]:
    """What an input row carries on into the labeled rows: not its import's answer and provenance (journaled)."""
    return {k: v for k, v in item.items() if k not in ("answer", "from", "reask_invalid")}


def _judge(
    spec: SpecIR,
    item: dict[str, Any],
    key: str,
    answers: dict[str, dict[str, Any]],
    reasks: dict[str, Request],
    failures: dict[str, str],
    done: Outcome,
) -> tuple[dict[str, Any], str | None]:
    """One input's row, and the key of the answer it took; or a dead letter with the reason, and None."""
    entry = answers.get(key)
    if entry is None:  # failed after every retry, within the share the spec tolerates
        done.failed += 1
        return _dead(done, {**item, "kind": "failed", "reason": failures[key]}), None
    _add_usage(done.usage, entry)
    target, reason = accept(spec.task, entry["text"])
    if target is not None:
        return {**item, "output": target}, key
    reask_key = reasks[key][0]
    second = answers.get(reask_key)
    if second is None:
        reason = f"{reason}; re-asking failed: {failures.get(reask_key, 'not sent')}"
        return _dead(done, {**item, "kind": "invalid", "answer": entry["text"], "reason": reason}), None
    _add_usage(done.usage, second)
    target, reason = accept(spec.task, second["text"])
    if target is None:
        row = {**item, "kind": "invalid", "answer": second["text"], "first_answer": entry["text"]}
        return _dead(done, row | {"reason": f"{reason} (after one re-ask)"}), None
    done.fixed += 1
    return {**item, "output": target}, reask_key


def _dead(done: Outcome, row: dict[str, Any]) -> dict[str, Any]:
    done.invalid += row["kind"] == "invalid"
    done.first_dead = done.first_dead or f"{row.get('answer', '')[:200]!r}: {row['reason']}"
    return row


def reask_requests(spec: SpecIR, requests: list[Request], first: dict[str, dict[str, Any]]) -> dict[str, Request]:
    """For each answer in `first` (by key) that breaks the output contract: the re-ask, by the first request's
    key."""
    model_id, params = client.identity(spec.teacher, spec.task)
    out = {}
    for key, messages in requests:
        entry = first.get(key)
        if entry is None or key in out:
            continue
        target, reason = accept(spec.task, entry["text"])
        if target is None:
            again = reask_messages(spec.task, messages, entry["text"], reason)
            out[key] = (request_key(model_id, again, params), again)
    return out


def _check(spec: SpecIR, done: Outcome, failures: dict[str, str], sent: int, total: int) -> None:
    """Stop when more requests failed, over every chunk so far, than the spec tolerates; what was paid for
    stays."""
    done.failed_requests += len(failures)
    if failures and not done.first_failure:
        done.first_failure = next(iter(failures.values()))
    if done.failed_requests > spec.teacher.max_failed_share * total:
        raise DistillcError(
            "E402",
            f"{done.failed_requests} of {sent} teacher requests failed (first: {done.first_failure}), more than "
            f"teacher.max_failed_share {spec.teacher.max_failed_share:g} of {total}",
            help="the answers received are journaled; re-run to send only the missing ones",
        )


def _add_usage(usage: dict[str, int], entry: dict[str, Any]) -> None:
    for name in usage:
        usage[name] += int(entry.get("usage", {}).get(name, 0))


STAGE = Stage(
    name="label",
    version=4,  # 4: answers imported with the inputs label them (or are dead-lettered), never asked
    reads=("task", "teacher", "budget"),
    needs=("inputs",),
    produces=("labeled.jsonl", "dead_letter.jsonl"),
    run=run,
)
