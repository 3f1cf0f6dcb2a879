"""Teacher over any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, Ollama, llama.cpp server).

A streaming pool: `max_concurrency` workers each take the next request as soon as their last one is
done, so one slow request never stalls the rest. Connections are kept alive. HTTP goes through aiohttp
rather than the openai SDK: against a 50 ms endpoint at 64 in flight the SDK reached 0.4 of the
possible request rate on a 2-core machine, aiohttp 0.9 (bench/labeling_rate.py). Each answer is
journaled (fsync'd) before it counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillc.build.events import Event, Progress, Sink
from distillc.errors import DistillcError
from distillc.spec.ir import TaskIR, TeacherIR
from distillc.task import task_type
from distillc.teacher import budget, retry
from distillc.teacher.cost import usd
from distillc.teacher.journal import GroupCommit, Journal, journal_entry
from distillc.teacher.paid import PaidTeacher
from distillc.teacher.protocol import OVER_BUDGET, Messages, Request, TeacherClient
from distillc.teacher.ratelimit import RateLimiter, request_tokens

OPENAI_URL = "https://api.openai.com/v1"
TOP_LOGPROBS = 20  # alternatives per answer token (OpenAI's maximum, vLLM's default cap): a label set's first tokens
REFUSALS_BEFORE_STOP = 10  # 4xx answers, with not one success: the requests themselves are wrong
DOING = {"inputs": " while generating inputs"}  # what a stage was doing when the budget stopped it


# Parameters an endpoint may refuse, what goes with each, and what the build does without it.
DROPPABLE = {
    "response_format": (
        ("response_format",),
        "asking in the prompt only; every answer is still checked against the output contract",
    ),
    "logprobs": (("logprobs", "top_logprobs"), "no soft labels: the student learns from the answers alone"),
}


@dataclass(frozen=True)
class Completion:
    """One chat answer: its text, token usage, and (when the endpoint gave them) each answer token with its
    logprob and top alternatives, as `[token, logprob, [[alternative, logprob], ...]]`."""

    text: str
    usage: dict[str, int]
    logprobs: list[Any] | None = None


class RequestFailed(Exception):
    """A request that will not succeed: retries are spent, or the endpoint refused it (4xx)."""

    def __init__(self, reason: str, status: int = 0, last_status: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status  # a refusal (4xx): not retried
        self.last_status = last_status  # the last attempt's status when retries are spent


def params(teacher: TeacherIR, task: TaskIR | None = None) -> dict[str, Any]:
    """Sampling parameters, and the endpoint's structured output as the task type holds it to the contract;
    for a type with a closed answer set (labels), each answer token's alternatives (logprobs): the teacher's
    distribution over the set, which soft-label training learns from."""
    out: dict[str, Any] = {"temperature": teacher.temperature, "max_tokens": teacher.max_tokens}
    if task is not None and (response_format := task_type(task).endpoint_format(task)):
        out["response_format"] = response_format
    if task is not None and task_type(task).choices(task):
        out["logprobs"] = True
        out["top_logprobs"] = TOP_LOGPROBS
    return out


def as_json_object(response_format: dict[str, Any]) -> dict[str, Any]:
    """The same schema in the form llama-cpp-python's server takes: `json_object` with a `schema`."""
    return {"type": "json_object", "schema": response_format["json_schema"]["schema"]}


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


@dataclass
class Endpoint:
    """One endpoint as the pool sees it: a keep-alive session, the shared pause, rate limits and retries."""

    teacher: TeacherIR
    session: Any  # aiohttp.ClientSession
    emit: Sink
    stage: str
    pause: retry.Pause = field(default_factory=retry.Pause)
    limiter: RateLimiter | None = None
    adapted: set[str] = field(default_factory=set)  # parameters the endpoint refused, adapted pool-wide
    proxy: str | None = None

    def __post_init__(self) -> None:
        # HTTPS_PROXY and friends, looked up once: per request it costs measurable throughput.
        scheme = self.url.split("://", 1)[0]
        host = self.url.split("://", 1)[-1].split("/", 1)[0]
        if not urllib.request.proxy_bypass(host):
            self.proxy = urllib.request.getproxies().get(scheme)

    @property
    def url(self) -> str:
        return (self.teacher.base_url or OPENAI_URL).rstrip("/")

    async def chat(self, messages: Messages, extra: dict[str, Any]) -> Completion:
        """The answer, its usage and its token logprobs, after retries; RequestFailed when there is none."""
        payload = {"model": self.teacher.model, "messages": messages, **extra}
        tokens = request_tokens(messages, self.teacher.max_tokens)
        while True:
            for name in self.adapted & DROPPABLE.keys():
                for dropped in DROPPABLE[name][0]:
                    payload.pop(dropped, None)
            if "json_schema" in self.adapted and (payload.get("response_format") or {}).get("type") == "json_schema":
                payload["response_format"] = as_json_object(payload["response_format"])
            if "max_tokens" in self.adapted and "max_tokens" in payload:
                payload["max_completion_tokens"] = payload.pop("max_tokens")
            try:
                return await self.send("POST", "/chat/completions", _parse_chat, tokens, payload)
            except RequestFailed as exc:
                # Servers refuse a parameter they do not know with a 400 or a 422, and some with a 500.
                if (exc.status in (400, 422) or exc.last_status >= 500) and self._adapt(payload, exc.reason):
                    continue
                raise

    def _adapt(self, payload: dict[str, Any], reason: str) -> bool:
        """Endpoints differ in what they accept: when a refusal names a parameter that has a stand-in, use it
        from now on, for every request, and say so. True when the request should be sent again."""
        said = reason.lower()
        response_format = payload.get("response_format") or {}
        if response_format and ("response_format" in said or "json_schema" in said):
            if response_format.get("type") == "json_schema":  # first the form llama-cpp-python's server takes
                name, instead = "json_schema", "sending the schema in a json_object response_format instead"
            else:
                name, instead = "response_format", DROPPABLE["response_format"][1]
        elif "logprobs" in payload and "logprobs" in said:
            name, instead = "logprobs", DROPPABLE["logprobs"][1]
        elif "max_tokens" in payload and "max_tokens" in said:
            name, instead = "max_tokens", "sending max_completion_tokens instead"
        else:
            return False
        if name not in self.adapted:
            self.adapted.add(name)
            self.emit(Event("warning", self.stage, f"endpoint refused {name} ({reason}); {instead}"))
        return True

    async def send(
        self,
        method: str,
        path: str,
        parse: Callable[[bytes], Any],
        tokens: int = 0,
        payload: Any = None,
        form: Callable[[], Any] | None = None,
    ) -> Any:
        """One HTTP call, retrying transient failures; `parse` turns the body into the result or raises
        ValueError. `form` builds a multipart body afresh for each attempt."""
        import aiohttp

        for attempt in range(self.teacher.max_retries + 1):
            await self.pause.wait()
            if self.limiter:
                await self.limiter.acquire(tokens)
            wait, status = None, 0
            body_args = {"json": payload} if form is None else {"data": form()}
            try:
                async with self.session.request(method, self.url + path, proxy=self.proxy, **body_args) as response:
                    status, body = response.status, await response.read()
                    headers = response.headers
            except asyncio.TimeoutError:
                reason = f"no answer within teacher.timeout_s ({self.teacher.timeout_s:g} s)"
            except aiohttp.ClientError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    try:
                        return parse(body)
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        reason = f"malformed response ({type(exc).__name__}: {exc}): {body[:120]!r}"
                else:
                    reason = f"HTTP {status}: {_error_message(body)}"
                    if status in retry.FATAL_STATUS:
                        raise DistillcError(
                            "E405",
                            f"the teacher endpoint {self.url} refused the request: {reason}",
                            help="check teacher.model, teacher.base_url and the key in teacher.api_key_env; "
                            "answers received so far are journaled",
                        )
                    if status not in retry.RETRYABLE_STATUS:
                        raise RequestFailed(reason, status)
                    wait = retry.retry_after_s(headers)
            if attempt == self.teacher.max_retries:
                break
            if wait is None:
                await retry.CLOCK.sleep(retry.backoff_s(attempt))
            elif self.pause.extend(wait) and wait >= 1:
                self.emit(Event("warning", self.stage, f"endpoint asked to wait {wait:g} s: all requests paused"))
        raise RequestFailed(f"{reason} (after {self.teacher.max_retries + 1} attempts)", last_status=status)


def _parse_chat(body: bytes) -> Completion:
    return parse_completion(json.loads(body))


def parse_completion(value: Any) -> Completion:
    """The answer in a chat completion object."""
    choice = value["choices"][0]
    text = choice["message"]["content"] or ""
    if not isinstance(text, str):
        raise TypeError("message content is not text")
    usage = value.get("usage") or {}
    used = {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }
    return Completion(text, used, _token_logprobs(choice.get("logprobs")))


def _token_logprobs(value: Any) -> list[Any] | None:
    """Each answer token with its logprob and alternatives, compact; None when the endpoint sent none."""
    content = (value or {}).get("content") if isinstance(value, dict) else None
    if not content:
        return None
    return [
        [t["token"], float(t["logprob"]), [[a["token"], float(a["logprob"])] for a in t.get("top_logprobs") or ()]]
        for t in content
    ]


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace") or "(empty body)"


@contextlib.asynccontextmanager
async def connect(teacher: TeacherIR, emit: Sink, stage: str) -> AsyncIterator[Endpoint]:
    """A keep-alive session to the teacher's endpoint, with the spec's rate limits."""
    import aiohttp

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=teacher.max_concurrency),
        timeout=aiohttp.ClientTimeout(total=teacher.timeout_s),
        headers={"authorization": f"Bearer {api_key(teacher)}"},
    ) as session:
        limiter = RateLimiter(teacher.requests_per_minute, teacher.tokens_per_minute)
        yield Endpoint(teacher, session, emit, stage, limiter=limiter)


class EndpointTeacher(PaidTeacher):
    """The teacher behind an OpenAI-compatible endpoint: a streaming pool of `max_concurrency` requests,
    each holding its worst-case price against the budget while in flight."""

    def complete(self, requests: Sequence[Request]) -> dict[str, str]:
        """Send every request; journal each answer. Returns failures: request key -> reason."""
        failures: dict[str, str] = {}
        if requests:
            asyncio.run(self._complete(list(requests), failures))
        self.budget.stop_if_over(DOING.get(self.stage, ""))
        return failures

    async def _complete(self, pending: list[Request], failures: dict[str, str]) -> None:
        answered: list[str] = []
        refused = 0  # answered 4xx
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        progress = Progress(
            self.emit, self.stage, len(pending), "teacher answers", spent=lambda: usd(self.teacher, *usage.values())
        )
        extra = params(self.teacher, self.task)
        commit = GroupCommit(self.journal)
        async with connect(self.teacher, self.emit, self.stage) as endpoint:

            async def worker(work: Iterator[Request]) -> None:
                nonlocal refused
                for key, messages in work:
                    allowed, reservation = self.hold(messages)
                    if not allowed:
                        failures[key] = OVER_BUDGET
                        continue
                    started = time.perf_counter()
                    try:
                        answer = await endpoint.chat(messages, extra)
                    except RequestFailed as exc:
                        self.budget.release(reservation)
                        failures[key] = exc.reason
                        progress.step()
                        refused += bool(exc.status)
                        if refused >= REFUSALS_BEFORE_STOP and not answered:
                            raise DistillcError(
                                "E408",
                                f"the teacher endpoint refused the first {refused} requests ({exc.reason})",
                                help="the requests are malformed for this endpoint or model: check teacher.model, "
                                "max_tokens and the task's schema",
                            ) from None
                        continue
                    price = self.prices.record(answer.usage, reservation) if self.prices else None
                    seconds = time.perf_counter() - started  # retries included: what a caller would wait
                    entry = journal_entry(key, answer.text, answer.usage, price, answer.logprobs, seconds=seconds)
                    await commit.append(entry)  # on disk before it counts
                    self.budget.settle(reservation, price["usd"] if price else 0.0)
                    for name in usage:
                        usage[name] += answer.usage[name]
                    answered.append(key)
                    progress.step()

            async def pool(items: list[Request], size: int) -> None:
                work = iter(items)
                workers = [asyncio.create_task(worker(work)) for _ in range(min(size, len(items)))]
                try:
                    await asyncio.gather(*workers)
                finally:
                    for task_ in workers:
                        task_.cancel()
                    commit.drain()

            if self.probing:
                # How this endpoint bills is unknown: one answer shows it before more are in flight.
                await pool(pending[:1], 1)
                pending = pending[1:]
            await pool(pending, self.teacher.max_concurrency)
        progress.finish()


class OpenAICompatible:
    """The provider `openai`: any endpoint that speaks OpenAI's chat completions, through its Batch API with
    `teacher.batch` (providers/batch.py)."""

    name = "openai"
    reference_size = 0  # answers are generated under the endpoint's structured output: nothing to calibrate

    def identity(self, teacher: TeacherIR, task: TaskIR) -> tuple[str, dict[str, Any]]:
        # Named with its endpoint: the same model name behind a mock server and behind the real provider are
        # different teachers, and answers from one are never replayed for the other.
        return f"{teacher.model}@{teacher.base_url.rstrip('/')}", params(teacher, task)

    def connect(
        self,
        teacher: TeacherIR,
        task: TaskIR,
        journal: Journal,
        emit: Sink,
        stage: str,
        max_usd: float,
        reference: Sequence[Messages],
    ) -> TeacherClient:
        prices = budget.pricing(teacher)
        cap = budget.Budget.of_journal(max_usd if prices else 0.0, journal.totals())
        if teacher.batch:
            from distillc.teacher.providers.batch import BatchTeacher  # it builds on this module's Endpoint

            return BatchTeacher(teacher, task, journal, emit, stage, cap, prices)
        return EndpointTeacher(teacher, task, journal, emit, stage, cap, prices)


PROVIDER = OpenAICompatible()
