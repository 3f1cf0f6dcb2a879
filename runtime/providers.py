"""Which onnxruntime execution providers a package's target asks for, in order of preference."""

from __future__ import annotations

import onnxruntime as ort

TARGET_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def providers_for(target: str) -> list[str]:
    """The target's providers that this onnxruntime build has (CPU is always last and always there)."""
    available = set(ort.get_available_providers())
    return [p for p in TARGET_PROVIDERS.get(target, ["CPUExecutionProvider"]) if p in available] or [
        "CPUExecutionProvider"
    ]


def runs_on_target(target: str) -> bool:
    """Whether this machine can run `target` as it will run when deployed."""
    return providers_for(target)[0] == TARGET_PROVIDERS[target][0]
