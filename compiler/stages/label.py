"""Label every input with the teacher, under the output contract.

Answers come from the journal when already paid for; only the missing ones are sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_jsonl, write_jsonl
from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.spec.ir import SpecIR
from distillc.task import accept, task_type
from distillc.task.prompts import label_messages, reask_messages
from distillc.teacher import client
from distillc.teacher.budget import refuse_over_estimate
from distillc.teacher.cost import usd
from distillc.teacher.journal import Answers, Journal, journal_path, request_key
from distillc.teacher.protocol import Request
from distillc.teacher.soft_labels import label_distribution
from distillc.teacher.speed import teacher_speed


def teacher_requests(spec: SpecIR, items: list[dict[str, Any]]) -> list[Request]:
    """One chat request per input, keyed by what the answer depends on (model, messages, parameters)."""
    model_id, params = client.identity(spec.teacher, spec.task)
    requests = []
    for item in items:
        messages = label_messages(spec.task, item["input"])
        requests.append((request_key(model_id, messages, params), messages))
    return requests


def unanswered(requests: list[Request], journal: Answers) -> list[Request]:
    """The requests the journal has no answer for, each once."""
    answered = journal.answered(key for key, _ in requests)
    return list({key: (key, m) for key, m in requests if key not in answered}.values())


def run(ctx: StageContext, inputs: Path) -> dict[str, Any]:
    spec = ctx.spec
    teacher = spec.teacher
    choices = task_type(spec.task).choices(spec.task)
    items = read_jsonl(inputs / "inputs.jsonl")
    requests = teacher_requests(spec, items)

    with Journal(journal_path(ctx.build_dir)) as journal:
        pending = unanswered(requests, journal)
        if journal.skipped:
            lines = ", ".join(map(str, journal.skipped[:10])) + (" …" if len(journal.skipped) > 10 else "")
            ctx.log(
                f"warning: {len(journal.skipped)} journal lines skipped while importing teacher.jsonl (torn, or not an "
                f"answer): {lines}"
            )
        ctx.log(f"{len(items) - len(pending)} answers from the journal, {len(pending)} to request")
        # A fixed sample of all inputs (by key, not by what is pending) calibrates a local teacher's label
        # scores, so an interrupted and resumed run calibrates exactly as an uninterrupted one.
        reference = [m for _, m in sorted(requests)[: client.reference_size(teacher)]]
        refuse_over_estimate(spec, [m for _, m in pending], journal.totals().spent_usd)
        asking = client.connect(teacher, spec.task, journal, ctx.emit, ctx.stage, spec.budget.max_usd, reference)
        failures = asking.complete(pending)
        _check(spec, failures, len(pending), len(requests))
        # Invalid answers get one more try, with the answer and what is wrong with it in the conversation.
        reasks = reask_requests(spec, requests, journal)
        pending_reasks = unanswered(list(reasks.values()), journal)
        if pending_reasks:
            ctx.log(f"{len(reasks)} invalid answers, {len(pending_reasks)} re-asked")
        failures |= asking.complete(pending_reasks)
        _check(spec, failures, len(pending) + len(pending_reasks), len(requests))
        answers = journal.get_many([key for key, _ in requests] + [key for key, _ in reasks.values()])
        speed = teacher_speed(asking, requests, answers)

    labeled, dead = [], []
    fixed = 0
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for item, (key, _) in zip(items, requests, strict=True):
        entry = answers.get(key)
        if entry is None:  # failed after every retry, within the share the spec tolerates
            dead.append({**item, "kind": "failed", "reason": failures[key]})
            continue
        _add_usage(usage, entry)
        target, reason = accept(spec.task, entry["text"])
        if target is None:
            reask_key = reasks[key][0]
            second = answers.get(reask_key)
            if second is None:
                reason = f"{reason}; re-asking failed: {failures.get(reask_key, 'not sent')}"
                dead.append({**item, "kind": "invalid", "answer": entry["text"], "reason": reason})
                continue
            _add_usage(usage, second)
            target, reason = accept(spec.task, second["text"])
            if target is None:
                dead.append(
                    {
                        **item,
                        "kind": "invalid",
                        "answer": second["text"],
                        "first_answer": entry["text"],
                        "reason": f"{reason} (after one re-ask)",
                    }
                )
                continue
            fixed += 1
            entry = second
        row = {**item, "output": target}
        if choices and (soft := label_distribution(choices, entry)):
            row["soft"] = {label: round(p, 6) for label, p in soft.items()}
        labeled.append(row)
    write_jsonl(ctx.workdir / "labeled.jsonl", labeled)
    write_jsonl(ctx.workdir / "dead_letter.jsonl", dead)
    invalid = [d for d in dead if d["kind"] == "invalid"]
    if not labeled:
        first = dead[0]
        raise DistillcError(
            "E403",
            f"the teacher gave no valid answer for any of {len(items)} inputs "
            f"(first: {first.get('answer', '')[:200]!r}: {first['reason']})",
            help="the answers are journaled and will not be paid for again; check the teacher and the task",
        )
    ctx.log(
        f"{len(labeled)} labeled ({fixed} after a re-ask), {len(invalid)} invalid, {len(dead) - len(invalid)} failed"
    )
    return {
        "failed": len(dead) - len(invalid),
        "rejected": len(invalid),
        "reasked": len(reasks),
        "fixed_by_reask": fixed,
        "dead_letter": [
            {
                "input": d["input"][:200],
                "kind": d["kind"],
                "reason": d["reason"][:300],
                "answer": d.get("answer", "")[:200],
            }
            for d in dead[:10]
        ],
        "usd": round(usd(teacher, usage["prompt_tokens"], usage["completion_tokens"]), 6),
        "labeled": len(labeled),
        "soft_labels": sum("soft" in row for row in labeled),
        "requests_sent": len(pending) + len(pending_reasks),
        "usage": usage,
        "distribution": _distribution(labeled) if choices else {},
        "teacher": speed,
    }


def reask_requests(spec: SpecIR, requests: list[Request], journal: Journal) -> dict[str, Request]:
    """For each journaled answer that breaks the output contract: the re-ask, by the first request's key."""
    model_id, params = client.identity(spec.teacher, spec.task)
    out = {}
    first = journal.get_many(key for key, _ in requests)
    for key, messages in requests:
        entry = first.get(key)
        if entry is None or key in out:
            continue
        target, reason = accept(spec.task, entry["text"])
        if target is None:
            again = reask_messages(spec.task, messages, entry["text"], reason)
            out[key] = (request_key(model_id, again, params), again)
    return out


def _check(spec: SpecIR, failures: dict[str, str], sent: int, total: int) -> None:
    """Stop when more requests failed than the spec tolerates; what was paid for stays."""
    if len(failures) > spec.teacher.max_failed_share * total:
        first = next(iter(failures.values()))
        raise DistillcError(
            "E402",
            f"{len(failures)} of {sent} teacher requests failed (first: {first}), more than "
            f"teacher.max_failed_share {spec.teacher.max_failed_share:g} of {total}",
            help="the answers received are journaled; re-run to send only the missing ones",
        )


def _add_usage(usage: dict[str, int], entry: dict[str, Any]) -> None:
    for name in usage:
        usage[name] += int(entry.get("usage", {}).get(name, 0))


def _distribution(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["output"]] = counts.get(row["output"], 0) + 1
    return dict(sorted(counts.items()))


STAGE = Stage(
    name="label",
    version=3,  # 3: label rows carry the teacher's distribution over the labels ("soft") when it gave one
    reads=("task", "teacher", "budget"),
    needs=("inputs",),
    produces=("labeled.jsonl", "dead_letter.jsonl"),
    run=run,
)
