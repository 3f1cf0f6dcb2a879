"""Label every input with the teacher, under the output contract.

Answers come from the journal when already paid for; only the missing ones are sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.artifacts import read_jsonl, write_jsonl
from distillc.errors import DistillcError
from distillc.runner import StageContext
from distillc.spec.ir import SpecIR
from distillc.teacher import client, local, openai_client
from distillc.teacher.contract import accept
from distillc.teacher.cost import Budget, TokenCounter, estimate, has_price, request_estimator, usd
from distillc.teacher.journal import Journal, journal_path, request_key
from distillc.teacher.prompts import label_messages

NAME = "label"
VERSION = 1
READS = ("task", "teacher")
NEEDS = ("inputs",)


Request = tuple[str, list[dict[str, str]]]  # (journal key, chat messages)


def teacher_requests(spec: SpecIR, items: list[dict[str, Any]]) -> list[Request]:
    """One chat request per input, keyed by what the answer depends on (model, messages, parameters)."""
    model_id, params = client.identity(spec.teacher, spec.task)
    requests = []
    for item in items:
        messages = label_messages(spec.task, item["input"])
        requests.append((request_key(model_id, messages, params), messages))
    return requests


def unanswered(requests: list[Request], journal: Journal) -> list[Request]:
    return list({key: (key, m) for key, m in requests if journal.get(key) is None}.values())


def run(ctx: StageContext, inputs: Path) -> dict[str, Any]:
    spec = ctx.spec
    teacher = spec.teacher
    items = read_jsonl(inputs / "inputs.jsonl")
    requests = teacher_requests(spec, items)

    with Journal(journal_path(ctx.build_dir)) as journal:
        pending = unanswered(requests, journal)
        ctx.log(f"{len(items) - len(pending)} answers from the journal, {len(pending)} to request")
        # A fixed sample of all inputs (by key, not by what is pending) calibrates a local teacher's label
        # scores, so an interrupted and resumed run calibrates exactly as an uninterrupted one.
        reference = [m for _, m in sorted(requests)[: local.REFERENCE_SIZE]]
        spending = _budget(spec, pending) if teacher.provider == "openai" else None
        failures = client.complete(teacher, spec.task, pending, journal, ctx.emit, reference, spending)
        answers = dict(journal.entries)

    unsent = [key for key, reason in failures.items() if reason == openai_client.OVER_BUDGET]
    if unsent:
        raise DistillcError(
            "E503",
            f"budget.max_usd ${spec.budget.max_usd:g} reached: {len(unsent)} of {len(pending)} teacher "
            "requests were not sent",
            help="the answers received are journaled; raise budget.max_usd and re-run to send only the rest",
        )
    if len(failures) > teacher.max_failed_share * len(requests):
        first = next(iter(failures.values()))
        raise DistillcError(
            "E402",
            f"{len(failures)} of {len(pending)} teacher requests failed (first: {first}), more than "
            f"teacher.max_failed_share {teacher.max_failed_share:g} of {len(requests)}",
            help="the answers received are journaled; re-run to send only the missing ones",
        )

    labeled, rejected, dead = [], [], []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for item, (key, _) in zip(items, requests, strict=True):
        entry = answers.get(key)
        if entry is None:  # failed after every retry, within the share the spec tolerates
            dead.append({**item, "reason": failures[key]})
            continue
        for name in usage:
            usage[name] += int(entry.get("usage", {}).get(name, 0))
        target, reason = accept(spec.task, entry["text"])
        if target is None:
            rejected.append({**item, "answer": entry["text"], "reason": reason})
        else:
            labeled.append({**item, "output": target})
    write_jsonl(ctx.workdir / "labeled.jsonl", labeled)
    write_jsonl(ctx.workdir / "rejected.jsonl", rejected)
    write_jsonl(ctx.workdir / "dead_letter.jsonl", dead)
    if not labeled:
        first = rejected[0]
        raise DistillcError(
            "E403",
            f"the teacher gave no valid answer for any of {len(items)} inputs "
            f"(first: {first['answer'][:200]!r}: {first['reason']})",
            help="the answers are journaled and will not be paid for again; check the teacher and the task",
        )
    ctx.log(f"{len(labeled)} labeled, {len(rejected)} rejected, {len(dead)} failed")
    return {
        "failed": len(dead),
        "failures": [{"input": d["input"][:200], "reason": d["reason"][:300]} for d in dead[:10]],
        "usd": round(usd(teacher, usage["prompt_tokens"], usage["completion_tokens"]), 6),
        "labeled": len(labeled),
        "rejected": len(rejected),
        "requests_sent": len(pending),
        "usage": usage,
        "distribution": _distribution(labeled) if spec.task.output_type == "label" else {},
    }


def _distribution(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["output"]] = counts.get(row["output"], 0) + 1
    return dict(sorted(counts.items()))


def _budget(spec: SpecIR, pending: list[Request]) -> openai_client.Spending | None:
    """Refuse up front when the estimate is over budget; otherwise a guard for while spending."""
    if not (spec.budget.max_usd and has_price(spec.teacher) and pending):
        return None
    counter = TokenCounter(spec)
    planned = estimate(spec, counter, [m for _, m in pending])
    if planned.usd > spec.budget.max_usd:
        raise DistillcError(
            "E502",
            f"labeling {planned.requests} inputs is estimated at ${planned.usd:.4f}, over budget.max_usd "
            f"${spec.budget.max_usd:g}; nothing was sent",
            help="raise budget.max_usd, or lower inputs.source.limit",
        )
    return openai_client.Spending(Budget(spec.teacher, spec.budget.max_usd), request_estimator(spec, counter))
