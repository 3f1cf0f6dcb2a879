"""Packaging policy: what the package's files say about where and how it runs (image, Python, memory,
probes), decided here from the target table and the build's measurements, so that templates only fill in."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from distillc.build.artifacts import canonical_sha256
from distillc.package.runtime_lock import lock_path
from distillc.targets import TARGETS

# What the web server adds to the peak the verify stage measures for the model's process (Python,
# onnxruntime, tokenizer, model): the default package's server peaked at 456 MiB after 20 requests,
# against 439 MiB for the model's process alone; rounded up, with room for request buffers.
SERVER_MEMORY_MI = 64


def requirements(target: str) -> str:
    """The runtime's whole dependency closure for `target`, pinned with hashes (runtime/locks)."""
    return lock_path(target).read_text(encoding="utf-8")


def image(target: str) -> dict[str, Any]:
    """What the Dockerfile, compose.yaml, the Kubernetes manifests and the README take from the target's row
    of the table (distillc.targets): base image, Python, GPU, TensorRT's libraries and engine cache."""
    row = TARGETS[target]
    return {
        "base_image": row.base_image,
        "python": row.python,
        "python_version": row.python_version,
        "system_python": row.system_python,
        "gpu": row.gpu,
        "tensorrt": row.tensorrt,
        "tensorrt_libs": row.extra_pip,
    }


def deployment(spec: Any, model_dir: Path, model_files: dict[str, str], memory_mb: float | None) -> dict[str, Any]:
    """What compose.yaml and the Kubernetes manifests need: an image tag tied to the model's bytes, the
    memory to request (the variant's measured peak, or its size on disk where it could not be measured,
    plus the web server's share), the grace period."""
    model_mi = math.ceil(memory_mb or model_bytes(model_dir) / 2**20)
    return {
        "image": f"{spec.name}:{canonical_sha256(model_files)[:12]}",
        "model_memory_mi": model_mi,
        "memory_mi": model_mi + SERVER_MEMORY_MI,
        "cpu": 1,
        "grace_s": int(spec.deploy.request_timeout_s) + 10,
        # TensorRT builds its engines on first start (minutes): a probe must wait for that.
        "startup_failures": TARGETS[spec.export.target].startup_failures,
    }


def model_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
