"""How fast and how costly the teacher is, measured: the numbers the report sets against the student's.

- latency: an endpoint's time per request while labeling (from the journal); a local teacher answers a
  sample of the requests one at a time after labeling, on this machine, as the student is measured;
- compute per answer: a local teacher's batched time per answer while labeling, for its cost;
- dollars per answer: what the journal recorded from the spec's prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import Any

from distillc.quality.latency import percentiles
from distillc.teacher.protocol import MeasuresLatency, Request, TeacherClient

LATENCY_PROBES = 20  # requests a local teacher answers one at a time for its latency


def teacher_speed(asking: TeacherClient, requests: Sequence[Request], entries: Mapping[str, Any]) -> dict[str, Any]:
    answered = [entries[key] for key, _ in requests if key in entries]
    timed = [e["seconds"] for e in answered if "seconds" in e]
    parameters = None
    if isinstance(asking, MeasuresLatency):
        latency, how = asking.latencies(sorted(requests)[:LATENCY_PROBES]), "one at a time, after labeling"
        parameters = asking.parameters()
    else:
        latency, how = timed, "per request, while labeling"
    priced = [e["usd"] for e in answered if "usd" in e]
    return {
        "latency_ms": percentiles([x * 1000 for x in latency]) | {"measured": how} if latency else None,
        "seconds_per_answer": round(fmean(timed), 5) if timed else None,
        "usd_per_answer": round(fmean(priced), 8) if priced else None,
        "parameters": parameters,  # known for a local teacher only
    }
