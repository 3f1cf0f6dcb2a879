"""Teacher providers: one module each behind one protocol; measuring latency here is a capability a
provider's client may have, asked for by what it can do, not by its class."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from distillc.teacher import client
from distillc.teacher.protocol import MeasuresLatency, Provider, Request
from distillc.teacher.providers import PROVIDERS
from distillc.teacher.providers.local import LocalTeacher
from distillc.teacher.providers.openai_compatible import EndpointTeacher
from distillc.teacher.speed import TeacherSpeed


def test_each_provider_answers_the_protocol_from_its_own_module() -> None:
    modules = {name: inspect.getmodule(provider) for name, provider in PROVIDERS.items()}
    assert {name: m.__name__.rsplit(".", 1)[-1] for name, m in modules.items() if m} == {
        "openai": "openai_compatible",
        "local": "local",
    }
    for name, provider in PROVIDERS.items():
        assert provider.name == name and isinstance(provider.reference_size, int)
        members = {m for m in dir(Provider) if not m.startswith("_")}
        assert members <= set(dir(provider))
    assert PROVIDERS["local"].reference_size > 0 and PROVIDERS["openai"].reference_size == 0


def test_latency_is_a_capability_not_a_class() -> None:
    assert issubclass(LocalTeacher, MeasuresLatency) and not issubclass(EndpointTeacher, MeasuresLatency)

    class Timed:
        """A teacher of no known class that answers one request at a time here."""

        def complete(self, requests: Sequence[Request]) -> dict[str, str]:
            return {}

        def latencies(self, requests: Sequence[Request]) -> list[float]:
            return [0.010, 0.020, 0.030][: len(requests)]

        def parameters(self) -> int:
            return 1234

    requests = [(f"k{i}", [{"role": "user", "content": str(i)}]) for i in range(3)]
    entries = {key: {"seconds": 5.0} for key, _ in requests}
    speed = TeacherSpeed()
    speed.add(entries.values())
    speed = speed.summary(Timed(), requests)
    assert speed["latency_ms"]["p50"] == 20.0 and speed["latency_ms"]["measured"] == "one at a time, after labeling"
    assert speed["parameters"] == 1234 and speed["seconds_per_answer"] == 5.0


def test_the_client_dispatches_on_the_spec_provider() -> None:
    from distillc.spec.ir import TaskIR

    task = TaskIR("Route.", (), "label", ("a", "b"), "")
    teacher = type("T", (), {"provider": "local", "model": "m", "temperature": 0.0, "max_tokens": 8})()
    assert client.identity(teacher, task)[0] == "local:m"  # type: ignore[arg-type]
    assert client.reference_size(teacher) == PROVIDERS["local"].reference_size  # type: ignore[arg-type]
