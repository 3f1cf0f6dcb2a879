"""The package proves its model on the CPU it runs on, before it serves.

The build records `selftest.json`: a few dozen held-out inputs, each with the shipped variant's answer
and the fp32 student's, as the verify stage measured them on the build machine, and the shipped
variant's agreement with fp32 there. At start-up the server answers the same inputs here; if the
agreement with fp32 falls more than `tolerance` below the build's figure, the package is computing
differently on this CPU (an int8 kernel that saturates where the build's was exact, say), and the
server refuses readiness, saying which CPU, which variant and what agreement.
`python -I PACKAGE_DIR/distillc_runtime/launch.py check PACKAGE_DIR --answers` runs the same test by hand.

The answers are binding where the package runs on the execution provider the build measured with (the
CPU, for CPU packages). A GPU package verified on a machine without a GPU runs other kernels where it is
deployed, whose float sums may round otherwise: there the self-test is reported, not enforced.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillc_runtime import cpu

SELFTEST = "selftest.json"


@dataclass(frozen=True)
class SelfTest:
    """The outcome on this CPU."""

    variant: str
    n: int
    agreement: float  # answers equal to the fp32 student's, here
    expected: float  # the same, as the build measured it
    tolerance: float
    same_as_build: float  # answers equal to the shipped variant's own at build time
    seconds: float
    cpu: dict[str, Any]
    built_on: dict[str, Any]
    provider: str  # the execution provider that answered here
    binding: bool  # the same provider the build measured with: a failure refuses readiness
    differing: list[dict[str, str]] = field(default_factory=list)  # the first few inputs answered otherwise

    @property
    def passed(self) -> bool:
        return self.agreement >= self.expected - self.tolerance - 1e-9

    @property
    def refuses(self) -> bool:
        """Whether the server must refuse readiness."""
        return self.binding and not self.passed

    def reason(self) -> str:
        return (
            f"the {self.variant} model agrees with the fp32 student on {self.agreement:.1%} of {self.n} self-test "
            f"inputs on this CPU, {cpu.text(self.cpu)}; the build measured {self.expected:.1%} on "
            f"{self.built_on.get('level', 'its CPU')} (tolerance {self.tolerance:.1%})"
        )

    def summary(self, inputs: bool = True) -> dict[str, Any]:
        """The outcome as data; without the inputs answered otherwise where it is served over HTTP (they are
        the build's data, not the caller's)."""
        found = {**asdict(self), "passed": self.passed, "refuses": self.refuses, "reason": self.reason()}
        return found if inputs else {k: v for k, v in found.items() if k != "differing"}


def load(package_dir: str | Path) -> dict[str, Any] | None:
    path = Path(package_dir) / SELFTEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run(generator: Any, recorded: dict[str, Any]) -> SelfTest:
    """Answer the recorded inputs with `generator` (the package's model, as it serves) and compare."""
    cases = recorded["cases"]
    started = time.perf_counter()
    # One at a time, as verify measured them: a batch's products have other shapes, and so other sums.
    answers = [generator.predict(case["input"]) for case in cases]
    seconds = time.perf_counter() - started
    agree = sum(answer == case["reference"] for answer, case in zip(answers, cases, strict=True))
    same = sum(answer == case["answer"] for answer, case in zip(answers, cases, strict=True))
    differing = [
        {"input": case["input"][:200], "answer": answer[:200], "at_build": case["answer"][:200]}
        for answer, case in zip(answers, cases, strict=True)
        if answer != case["answer"]
    ]
    n = max(len(cases), 1)
    provider = generator.session.get_providers()[0]
    return SelfTest(
        variant=recorded["variant"],
        n=len(cases),
        agreement=round(agree / n, 6),
        expected=float(recorded["agreement"]),
        tolerance=float(recorded["tolerance"]),
        same_as_build=round(same / n, 6),
        seconds=round(seconds, 3),
        cpu=cpu.describe(),
        built_on=recorded.get("built_on", {}),
        provider=provider,
        binding=provider == recorded.get("measured_with", provider),
        differing=differing[:5],
    )
