"""OpenAI-compatible endpoints, so an app switches from the teacher to the student by its base URL.

POST /v1/chat/completions (plain and `stream: true` as server-sent events) and GET /v1/models.

What the student does with a chat request, since its task and instructions are trained in:
- the input is the last user message's text; system messages and earlier turns are ignored (the
  instructions the student follows are the spec's, fixed at build time);
- decoding is greedy (`temperature` and `top_p` are accepted and have no effect), and constrained as
  the task says: a label, JSON under the schema, or text;
- `max_tokens` (or `max_completion_tokens`) is clamped to the package's `deploy.max_new_tokens`;
- `stop` strings cut the answer at the first one found;
- `logprobs: true` returns each answer token's log-probability, and `top_logprobs` (0-20) the likeliest
  alternatives at each step, as OpenAI's API shapes them. They come from the distribution the package
  decodes from (confidence.py): over the tokens the task's constraint allows at that step, so a token
  the constraint forces has log-probability 0.
The answer streams as one content chunk: it is computed whole, then sent.

A package whose student is a linear classifier (linear.py) generates no text: both paths answer 404 with
a detail that says to POST to /v1/predict (`not_generative`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from distillc_runtime.confidence import ROUTE_HEADER, Answer


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: Literal[1] = 1
    seed: int | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


Answering = Callable[[str, int], Awaitable[Answer]]


def router(
    model_name: str,
    answer: Answering,
    count_tokens: Callable[[str], int],
    max_new_tokens: int,
    token_text: Callable[[int], str],
) -> APIRouter:
    """The endpoints, around `answer` (the server's queued, deadline-bound path to the model, given the
    input and how many alternatives per token to keep); `token_text` spells one token."""
    routes = APIRouter()

    @routes.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "distillc"}]}

    @routes.post("/v1/chat/completions", response_model=None)
    async def chat(request: ChatRequest) -> JSONResponse | StreamingResponse:
        if request.model != model_name:
            raise HTTPException(
                status_code=404, detail=f"model {request.model[:100]!r} not found; this server has {model_name!r}"
            )
        users = [m for m in request.messages if m.role == "user"]
        if not users or not users[-1].text():
            raise HTTPException(status_code=422, detail="messages need a user message with text")
        if request.top_logprobs and not request.logprobs:
            raise HTTPException(status_code=422, detail="top_logprobs needs logprobs: true")
        text = users[-1].text()
        answered = await answer(text, request.top_logprobs or 0)
        limit = min(request.max_completion_tokens or request.max_tokens or max_new_tokens, max_new_tokens)
        content, finish = cut(answered.text, request.stop, limit, count_tokens)
        # The student's tokens have log-probabilities; a teacher's answer (a cascade's) has none here.
        wanted = request.logprobs and answered.route != "teacher"
        logprobs = token_logprobs(answered, content, request.top_logprobs or 0, token_text) if wanted else None
        headers = {ROUTE_HEADER: answered.route}
        usage = {"prompt_tokens": count_tokens(text), "completion_tokens": count_tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if request.stream:
            chunks = stream(ident, created, model_name, content, finish, usage, logprobs)
            return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": logprobs,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
            headers=headers,
        )

    return routes


NOT_GENERATIVE = (
    "this package's student is a linear classifier over TF-IDF features, not a language model: it has no "
    'chat endpoint; POST {"input": "..."} to /v1/predict for its label'
)


def not_generative(model_name: str) -> APIRouter:
    """What a package whose student generates nothing answers at the OpenAI paths: 404, saying where to ask."""
    routes = APIRouter()

    @routes.api_route("/v1/models", methods=["GET"])
    @routes.api_route("/v1/chat/completions", methods=["POST"])
    def absent() -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": f"{model_name}: {NOT_GENERATIVE}"})

    return routes


def cut(content: str, stop: str | list[str] | None, limit: int, count_tokens: Callable[[str], int]) -> tuple[str, str]:
    """The answer cut at the first stop string, or to `limit` tokens: (content, finish_reason)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    found = [content.index(s) for s in stops if s and s in content]
    if found:
        return content[: min(found)], "stop"
    if count_tokens(content) <= limit:
        return content, "stop"
    words = content.split(" ")
    while words and count_tokens(" ".join(words)) > limit:  # whole words, so no character is split
        words.pop()
    return " ".join(words), "length"


def token_logprobs(answer: Answer, content: str, top: int, token_text: Callable[[int], str]) -> dict[str, Any]:
    """OpenAI's `choices[].logprobs`: one entry per token of `content` (the answer, possibly cut by `stop` or
    `max_tokens`: the tokens past the cut are left out), each with its `top` likeliest alternatives."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        spelled = token_text(token)
        return {"token": spelled, "logprob": logprob, "bytes": list(spelled.encode("utf-8"))}

    entries, spelled = [], ""
    for i, token in enumerate(answer.token_ids):
        spelled += token_text(token)
        if content != answer.text and len(spelled.strip()) > len(content):
            break  # this token lies past the cut
        alternatives = answer.top[i][:top] if i < len(answer.top) else ()
        entries.append(entry(token, answer.logprobs[i]) | {"top_logprobs": [entry(t, lp) for t, lp in alternatives]})
    return {"content": entries, "refusal": None}


def stream(
    ident: str, created: int, model: str, content: str, finish: str, usage: dict, logprobs: dict | None = None
) -> Iterator[str]:
    def event(delta: dict, finish_reason: str | None = None, logprobs: dict | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    yield event({"content": content}, logprobs=logprobs)
    yield event({}, finish, usage=usage)
    yield "data: [DONE]\n\n"
