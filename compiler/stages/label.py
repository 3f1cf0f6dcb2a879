"""Label every input with the teacher, under the output contract.

Answers come from the journal when already paid for; only the missing ones are sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.artifacts import read_jsonl, write_jsonl
from distillc.errors import DistillcError
from distillc.runner import StageContext
from distillc.teacher import local, openai_client
from distillc.teacher.contract import accept
from distillc.teacher.journal import Journal, request_key
from distillc.teacher.prompts import label_messages

NAME = "label"
VERSION = 1
READS = ("task", "teacher")
NEEDS = ("inputs",)


def journal_path(build_dir: Path) -> Path:
    return build_dir / "journal" / "teacher.jsonl"


def run(ctx: StageContext, inputs: Path) -> dict[str, Any]:
    spec = ctx.spec
    teacher = spec.teacher
    items = read_jsonl(inputs / "inputs.jsonl")
    if teacher.provider == "local":
        params = local.params(teacher, spec.task)
        model_id = f"local:{teacher.model}"
    else:
        params = openai_client.params(teacher)
        model_id = teacher.model
    requests = []
    for item in items:
        messages = label_messages(spec.task, item["input"])
        requests.append((request_key(model_id, messages, params), messages))

    with Journal(journal_path(ctx.build_dir)) as journal:
        pending = list({key: (key, m) for key, m in requests if journal.get(key) is None}.values())
        ctx.log(f"{len(items) - len(pending)} answers from the journal, {len(pending)} to request")
        if teacher.provider == "local":
            failures = local.complete(teacher, spec.task, pending, journal, ctx.emit)
        else:
            failures = openai_client.complete(teacher, pending, journal, ctx.emit)
        answers = dict(journal.entries)

    if failures:
        first = next(iter(failures.values()))
        raise DistillcError(
            "E402",
            f"{len(failures)} of {len(pending)} teacher requests failed (first: {first})",
            help="the answers received are journaled; re-run to send only the missing ones",
        )

    labeled, rejected = [], []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for item, (key, _) in zip(items, requests, strict=True):
        entry = answers[key]
        for name in usage:
            usage[name] += int(entry.get("usage", {}).get(name, 0))
        target, reason = accept(spec.task, entry["text"])
        if target is None:
            rejected.append({**item, "answer": entry["text"], "reason": reason})
        else:
            labeled.append({**item, "output": target})
    write_jsonl(ctx.workdir / "labeled.jsonl", labeled)
    write_jsonl(ctx.workdir / "rejected.jsonl", rejected)
    if not labeled:
        first = rejected[0]
        raise DistillcError(
            "E403",
            f"the teacher gave no valid answer for any of {len(items)} inputs "
            f"(first: {first['answer'][:200]!r}: {first['reason']})",
            help="the answers are journaled and will not be paid for again; check the teacher and the task",
        )
    ctx.log(f"{len(labeled)} labeled, {len(rejected)} rejected")
    return {
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
