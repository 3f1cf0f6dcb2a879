"""Teacher over any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, Ollama, llama.cpp server).

Requests run concurrently, bounded by a semaphore so one slow request never stalls the rest;
each answer is journaled the moment it arrives.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distillc.errors import DistillcError
from distillc.events import Event, Sink
from distillc.spec.ir import TeacherIR
from distillc.teacher.cost import Budget
from distillc.teacher.journal import Journal
from distillc.teacher.ratelimit import RateLimiter, request_tokens

Messages = list[dict[str, str]]
Pending = list[tuple[str, Messages]]
OVER_BUDGET = "not sent: budget reached"


@dataclass
class Spending:
    """The budget guard and what one request is expected to cost."""

    budget: Budget
    estimate_usd: Callable[[Messages], float]


def params(teacher: TeacherIR) -> dict[str, Any]:
    return {"temperature": teacher.temperature, "max_tokens": teacher.max_tokens}


def api_key(teacher: TeacherIR) -> str:
    key = os.environ.get(teacher.api_key_env, "")
    if key:
        return key
    if teacher.base_url:
        return "unused"  # self-hosted servers usually take no key
    raise DistillcError(
        "E401",
        f"environment variable {teacher.api_key_env} is not set",
        help=f"export {teacher.api_key_env}=... or point teacher.base_url at a local server",
    )


def complete(
    teacher: TeacherIR, pending: Pending, journal: Journal, emit: Sink, spending: Spending | None = None
) -> dict[str, str]:
    """Send every pending request; journal each answer. Returns failures: request key -> reason."""
    if not pending:
        return {}
    return asyncio.run(_complete(teacher, pending, journal, emit, spending))


async def _complete(
    teacher: TeacherIR, pending: Pending, journal: Journal, emit: Sink, spending: Spending | None
) -> dict[str, str]:
    from openai import APIError, AsyncOpenAI

    client = AsyncOpenAI(
        base_url=teacher.base_url or None,
        api_key=api_key(teacher),
        max_retries=teacher.max_retries,
        timeout=teacher.timeout_s,
    )
    gate = asyncio.Semaphore(teacher.max_concurrency)
    limiter = RateLimiter(teacher.requests_per_minute, teacher.tokens_per_minute)
    failures: dict[str, str] = {}
    done = 0

    async def one(key: str, messages: Messages) -> None:
        nonlocal done
        async with gate:
            await limiter.acquire(request_tokens(messages, teacher.max_tokens))
            cost = spending.estimate_usd(messages) if spending else 0.0
            if spending and not spending.budget.reserve(cost):
                failures[key] = OVER_BUDGET
                return
            try:
                response = await client.chat.completions.create(
                    model=teacher.model,
                    messages=messages,  # type: ignore[arg-type]
                    **params(teacher),
                )
            except APIError as exc:
                if spending:
                    spending.budget.release(cost)
                failures[key] = f"{type(exc).__name__}: {exc}"
                return
        text = response.choices[0].message.content or "" if response.choices else ""
        usage = {
            "prompt_tokens": response.usage.prompt_tokens if response.usage else 0,
            "completion_tokens": response.usage.completion_tokens if response.usage else 0,
        }
        journal.append(key, text, usage)
        if spending:
            spending.budget.settle(cost, usage)
        done += 1
        if done % 50 == 0 or done == len(pending):
            emit(Event("progress", "label", f"{done}/{len(pending)} teacher answers", {"done": done}))

    try:
        await asyncio.gather(*(one(key, messages) for key, messages in pending))
    finally:
        await client.close()
    return failures
