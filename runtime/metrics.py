"""Prometheus metrics of the package's server, in a registry of its own (one per app).

requests by route and status (413s and 429s included), request latency, queue depth, batch sizes and
tokens in and out, and the self-test's agreement on this CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 1.0)


class Metrics:
    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "distillc_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "distillc_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("distillc_queue_depth", "Requests waiting for the model", registry=self.registry)
        self.batch_size = Histogram(
            "distillc_batch_size",
            "Requests answered per model batch",
            buckets=tuple(range(1, max_batch_size + 1)),
            registry=self.registry,
        )
        self.tokens = Counter("distillc_tokens", "Prompt and answer tokens", ["direction"], registry=self.registry)
        self.selftest = Gauge(
            "distillc_selftest_agreement",
            "Self-test answers on this CPU that agree with the fp32 student (-1: the package has no self-test)",
            registry=self.registry,
        )

        # The cascade's (cascade.py): who answered, how sure the student was, and how the teacher fares.
        self.routes = Counter(
            "distillc_answers", "Answers by route (student, teacher, fallback)", ["route"], registry=self.registry
        )
        self.confidence = Histogram(
            "distillc_confidence",
            "The student's confidence in its answers",
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.teacher_latency = Histogram(
            "distillc_teacher_seconds",
            "Teacher call latency (retries included)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.teacher_errors = Counter(
            "distillc_teacher_errors",
            "Teacher calls that gave no usable answer, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.breaker = Gauge(
            "distillc_teacher_breaker",
            "The teacher's circuit breaker: 0 closed, 0.5 half-open, 1 open",
            registry=self.registry,
        )
        self.expected_escalation = Gauge(
            "distillc_expected_escalation",
            "Share of requests the build expected to go to the teacher",
            registry=self.registry,
        )

        self.expected_agreement = Gauge(
            "distillc_expected_agreement",
            "Agreement with the teacher the build measured where the student answers",
            registry=self.registry,
        )
        self.recent_escalation = Gauge(
            "distillc_escalation_rate", "Share of the last 1,000 requests sent to the teacher", registry=self.registry
        )
        self.shadow_agreement = Gauge(
            "distillc_shadow_agreement",
            "Agreement of the student with the teacher on the last 500 shadowed requests (NaN: none yet)",
            registry=self.registry,
        )
        self.shadows = Counter(
            "distillc_shadows",
            "Shadowed requests by result (agree, disagree, failed, dropped)",
            ["result"],
            registry=self.registry,
        )

    def watch_recent(self, escalation: Callable[[], float], agreement: Callable[[], float]) -> None:
        self.recent_escalation.set_function(escalation)
        self.shadow_agreement.set_function(agreement)

    def watch_breaker(self, state: Callable[[], float]) -> None:
        self.breaker.set_function(state)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by its route's path and response status."""

    def __init__(self, app: Any, metrics: Metrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"  # unknown paths share one label
        status = 500
        started = time.perf_counter()

        async def recorded(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
