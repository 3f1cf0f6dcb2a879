"""HTTP server for a distilled model: POST /v1/predict, the OpenAI-compatible /v1/chat/completions and
/v1/models (openai_api.py), GET /healthz, /readyz and /metrics.

Bad input gets a short 4xx that says what is wrong and never echoes the input back:
- a body over `deploy.max_request_bytes`: 413, refused from its Content-Length or as soon as the bytes
  read pass the limit, so a large body is never read whole;
- a body that is not UTF-8 or not JSON, wrong types, unknown fields, lone surrogates: 422;
- a prompt over `deploy.max_input_tokens` tokens: 422.

The student is a decoder, or for a label task possibly a linear classifier (model.py says which); the latter
answers /v1/predict only.

Load is bounded: one worker runs the model (micro-batches of up to `deploy.max_batch_size`); at most
`deploy.max_queue` requests wait for it, and more get 429 with Retry-After at once; a request not
answered within `deploy.request_timeout_s` gets 504, and is dropped if it had not started.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from distillc_runtime import openai_api, selftest
from distillc_runtime.batching import Batcher, DeadlineExceeded, Overloaded
from distillc_runtime.cascade import Cascade, CascadeConfig, EscalationsFull
from distillc_runtime.confidence import ROUTE_HEADER, Answer
from distillc_runtime.metrics import Metrics, RequestMetrics
from distillc_runtime.model import load_model
from distillc_runtime.providers import TARGET_PROVIDERS, providers_for

logger = logging.getLogger("distillc_runtime")

DEFAULT_MAX_REQUEST_BYTES = 65536


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = Field(min_length=1)  # pydantic refuses lone surrogates: text the tokenizer cannot encode


class PredictResponse(BaseModel):
    output: str
    confidence: float  # the student's, in [0, 1]; how it is scored: confidence.py
    route: str  # who answered: student, teacher or fallback (cascade.py)


class BodyGuard:
    """ASGI middleware that reads a request's body before the app does, within `limit` bytes:
    413 from the declared length or as soon as the bytes read pass it (a large body is never read
    whole), 422 for a body that is not UTF-8. The app then reads the body from memory."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body is over this server's limit of {self.limit} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await JSONResponse(status_code=413, content={"detail": too_large})(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:  # longer than it declared, or sent in chunks without a length
                await JSONResponse(status_code=413, content={"detail": too_large})(scope, receive, send)
                return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            detail = [{"loc": ["body"], "msg": f"body is not valid UTF-8 (byte {error.start})"}]
            await JSONResponse(status_code=422, content={"detail": detail})(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as the app expects
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class Occupancy:
    """Requests in the app now, against its limit: read by /readyz, which turns not-ready when full."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0

    @property
    def full(self) -> bool:
        return self.active >= self.limit


class InFlightLimit:
    """ASGI middleware: at most `occupancy.limit` requests in the app at once; the rest get 429 with
    Retry-After at once, as a full queue does. It sits inside BodyGuard, so only requests whose body has
    arrived whole take a place: a client that sends half a body holds no one up. Health probes and metrics
    are never refused: an orchestrator must not restart a server for being busy."""

    EXEMPT = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app: Any, occupancy: Occupancy) -> None:
        self.app, self.occupancy = app, occupancy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.occupancy.full:
            busy = JSONResponse(
                status_code=429,
                content={"detail": "too many requests in progress; retry shortly"},
                headers={"Retry-After": "1"},
            )
            await busy(scope, receive, send)
            return
        self.occupancy.active += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.occupancy.active -= 1


def in_flight_limit(deploy: dict[str, Any]) -> int:
    """Requests the app takes at once: a full queue's worth, plus room for those being answered."""
    return int(deploy.get("max_queue", 64)) + 32


MAX_PROBLEMS = 8  # a 422 lists at most this many problems
MAX_NAME = 40  # characters of a field name quoted back: a client's 60 KB name is not echoed whole


def validation_problems(error: RequestValidationError) -> list[dict[str, Any]]:
    """Where and what, without the offending value (which may be megabytes, or someone else's data), and
    with field names cut short: the answer stays small whatever was sent."""
    problems = []
    for item in error.errors()[:MAX_PROBLEMS]:
        message = item.get("msg", "invalid")
        if item.get("type") == "json_invalid":
            message = "body is not valid JSON"
        problems.append({"loc": [short(str(part)) for part in item.get("loc", ())][:8], "msg": short(message, 200)})
    return problems


def short(text: str, limit: int = MAX_NAME) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def create_app(
    package_dir: str | Path,
    max_batch_size: int | None = None,
    max_queue: int | None = None,
    capture_dir: str | Path | None = None,
) -> FastAPI:
    """The package's app; `max_batch_size` and `max_queue` override the package's deploy settings; with a
    cascade, `capture_dir` receives its escalated and shadowed pairs (cascade.PairLog)."""
    package = Path(package_dir)
    info = json.loads((package / "package.json").read_text(encoding="utf-8"))
    target = info.get("target", "cpu")
    deploy = info.get("deploy", {})
    if max_queue:
        deploy = {**deploy, "max_queue": max_queue}
    generator = load_model(
        package / "model",
        providers=providers_for(target, package / "model"),
        max_input_tokens=deploy.get("max_input_tokens"),
    )
    running = generator.session.get_providers()
    if generator.generative and running[0] != TARGET_PROVIDERS.get(target, running)[0]:
        # onnxruntime falls back to the CPU when a GPU provider cannot load (no GPU, no driver, a CUDA
        # mismatch): it still answers, far slower. Say so where operators look.
        logger.warning("package built for %s is running on %s", target, ", ".join(running))
    # Warm up before serving: first-run allocations (and, on GPUs, kernel or TensorRT engine builds)
    # then happen before the health check passes, not in a user's request.
    generator.predict("warm-up", max_new_tokens=1)
    # Prove the model on this CPU before serving it (selftest.py): a package whose answers differ from
    # the build's stays unready, and answers no request, rather than answer wrongly.
    proof = selftest.run(generator, recorded) if (recorded := selftest.load(package)) else None
    if proof is None:
        logger.warning("package has no %s: its answers on this CPU are not checked", selftest.SELFTEST)
    elif proof.passed:
        logger.info("self-test passed: %s", proof.reason())
    elif proof.refuses:
        logger.error("self-test failed, refusing readiness: %s", proof.reason())
    else:
        logger.warning("self-test differs on %s, not what the build measured with: %s", proof.provider, proof.reason())
    refused = proof is not None and proof.refuses
    max_batch_size = max_batch_size or int(deploy.get("max_batch_size", 1))
    metrics = Metrics(max_batch_size)
    metrics.selftest.set(proof.agreement if proof else -1)

    if score := info.get("confidence", {}).get("score"):
        generator.score = score  # the build chose how this task's answers are scored

    def answer_batch(requests: list[tuple[Any, int]]) -> list[Answer]:
        """One batch: each request is (prompt, alternatives wanted per token)."""
        prompts = [prompt for prompt, _ in requests]
        answers = generator.answer_prompts(prompts, top_logprobs=max(top for _, top in requests))
        metrics.batch_size.observe(len(prompts))
        if generator.generative:  # a linear classifier's inputs are words, and it generates no tokens
            metrics.tokens.labels("in").inc(sum(len(p) for p in prompts))
            metrics.tokens.labels("out").inc(sum(answer.tokens for answer in answers))
        return answers

    cascade_config = CascadeConfig.from_package(info)
    cascade = None
    if cascade_config is not None:
        capture = Path(capture_dir) if capture_dir else None
        cascade = Cascade(cascade_config, int(deploy.get("max_queue", 64)), metrics, capture)
        metrics.expected_escalation.set(cascade_config.expected_escalation)
        metrics.expected_agreement.set(cascade_config.expected_agreement)
        logger.info(
            "cascade: answers under confidence %.4g go to %s at %s",
            cascade_config.threshold,
            cascade_config.model,
            cascade_config.base_url,
        )

    batcher = Batcher(answer_batch, max_batch_size=max_batch_size, max_queue=int(deploy.get("max_queue", 64)))
    metrics.watch_queue(lambda: batcher.depth)
    timeout_s = float(deploy.get("request_timeout_s", 30.0))

    # No /docs, /redoc or /openapi.json: the package answers its API, not questions about it.
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if cascade is not None:  # finish the teacher's connections and sync the capture file
            await cascade.close()

    app = FastAPI(
        title=info["name"],
        version=info.get("distillc_version", ""),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    occupancy = Occupancy(in_flight_limit(deploy))
    app.add_middleware(InFlightLimit, occupancy=occupancy)  # inside BodyGuard: a whole body takes a place
    app.add_middleware(BodyGuard, limit=int(deploy.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)))
    routes = {"/healthz", "/readyz", "/metrics", "/v1/predict", "/v1/chat/completions", "/v1/models"}
    app.add_middleware(RequestMetrics, metrics=metrics, routes=routes)  # outermost: sees 413s too

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_problems(error)})

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        """Liveness: the process answers (a failed self-test is not cured by a restart on the same CPU)."""
        checked = proof.summary(inputs=False) if proof else None
        return {"status": "ok", "model": info["name"], "target": target, "providers": running, "selftest": checked}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Readiness: warmed up (the app exists only after warm-up), the self-test passed on this CPU, the
        model's worker is alive, and work is being taken: while every place is held, or the queue is full,
        new requests get 429, so the orchestrator should route elsewhere until one frees."""
        if refused:
            return JSONResponse(status_code=503, content={"status": "self-test failed", "reason": proof.reason()})
        if not batcher.alive:
            return JSONResponse(status_code=503, content={"status": "the model worker has stopped"})
        if occupancy.full or batcher.full:
            busy = {
                "status": "overloaded: refusing new requests",
                "in_flight": occupancy.active,
                "queue_depth": batcher.depth,
            }
            return JSONResponse(status_code=503, content=busy, headers={"Retry-After": "1"})
        return JSONResponse(content={"status": "ready", "queue_depth": batcher.depth})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def answer(text: str, top_logprobs: int = 0) -> Answer:
        """The answer through the queue and, with a cascade, from the teacher when the student is unsure; or
        the HTTP error that says why there is none."""
        deadline = time.monotonic() + timeout_s
        answered = await student_answer(text, top_logprobs)
        metrics.confidence.observe(answered.confidence)
        if cascade is not None:
            try:
                answered = await cascade.route(text, answered, deadline)
            except EscalationsFull:
                raise HTTPException(
                    status_code=429,
                    detail="too many requests are waiting for the teacher; retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
        metrics.routes.labels(answered.route).inc()
        return answered

    async def student_answer(text: str, top_logprobs: int) -> Answer:
        """The student's answer through the queue, or the HTTP error that says why there is none."""
        if refused:
            raise HTTPException(status_code=503, detail=f"this package's self-test failed: {proof.reason()}")
        prompt = generator.prepare(text)  # tokenized once, here: the worker thread only runs the model
        if problem := generator.length_problem(prompt):
            raise HTTPException(status_code=422, detail=problem)
        try:
            return await batcher.answer((prompt, top_logprobs), timeout_s)
        except Overloaded:
            raise HTTPException(
                status_code=429, detail="too many requests are waiting; retry shortly", headers={"Retry-After": "1"}
            ) from None
        except DeadlineExceeded:
            raise HTTPException(status_code=504, detail=f"no answer within {timeout_s:g} s") from None

    @app.post("/v1/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest, response: Response) -> PredictResponse:
        answered = await answer(request.input)
        response.headers[ROUTE_HEADER] = answered.route
        return PredictResponse(output=answered.text, confidence=round(answered.confidence, 6), route=answered.route)

    if not generator.generative:
        app.include_router(openai_api.not_generative(info["name"]))
        return app

    def count_tokens(text: str) -> int:
        return len(generator.tokenizer.encode(text, add_special_tokens=False).ids)

    max_new_tokens = int(deploy.get("max_new_tokens", generator.max_new_tokens))

    def token_text(token: int) -> str:
        return generator.tokenizer.decode([token], skip_special_tokens=False)

    app.include_router(openai_api.router(info["name"], answer, count_tokens, max_new_tokens, token_text))

    return app
