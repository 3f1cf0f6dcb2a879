"""How fast and how costly the teacher is, measured: the numbers the report sets against the student's.

- latency: an endpoint's time per request while labeling (from the journal); a local teacher answers a
  sample of the requests one at a time after labeling, on this machine, as the student is measured;
- compute per answer: a local teacher's batched time per answer while labeling, for its cost;
- dollars per answer: what the journal recorded from the spec's prices.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

from distillc.quality.latency import percentiles, quantiles
from distillc.teacher.protocol import MeasuresLatency, Request, TeacherClient

LATENCY_PROBES = 20  # requests a local teacher answers one at a time for its latency


class TeacherSpeed:
    """The answers' own figures, gathered chunk by chunk while labeling (8 bytes per answer)."""

    def __init__(self) -> None:
        self.timed = array("d")  # seconds per answer
        self.priced = array("d")  # dollars per answer

    def add(self, answers: Iterable[dict[str, Any]]) -> None:
        for entry in answers:
            if "seconds" in entry:
                self.timed.append(entry["seconds"])
            if "usd" in entry:
                self.priced.append(entry["usd"])

    def summary(self, asking: TeacherClient, probes: Sequence[Request]) -> dict[str, Any]:
        """`probes`: the requests a teacher that answers here measures its latency on, one at a time."""
        parameters = None
        if isinstance(asking, MeasuresLatency) and probes:  # none when every input came with its answer
            latency, how = asking.latencies(list(probes)[:LATENCY_PROBES]), "one at a time, after labeling"
            parameters = asking.parameters()
        else:
            latency, how = list(self.timed), "per request, while labeling"
        return {
            "latency_ms": percentiles([x * 1000 for x in latency]) | {"measured": how} if latency else None,
            "latency_quantiles_ms": quantiles([x * 1000 for x in latency]),  # for a cascade's latency
            "seconds_per_answer": round(fmean(self.timed), 5) if self.timed else None,
            "usd_per_answer": round(fmean(self.priced), 8) if self.priced else None,
            "parameters": parameters,  # known for a local teacher only
        }
