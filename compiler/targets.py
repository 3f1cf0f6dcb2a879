"""Where a package runs, as one table: everything that differs between the CPU, CUDA and TensorRT targets.

The spec accepts the names here; the export stage picks the graph, verify the providers, the package its
lock, base image, Python and GPU resources from the row. Templates get only values decided from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillc_runtime.providers import TARGET_PROVIDERS, runs_on_target

# onnxruntime-gpu 1.31.1 (checked in its wheel) needs CUDA 13 (libcudart.so.13, libcublas.so.13), cuDNN 9
# and, for TensorRT, libnvinfer.so.10: hence a CUDA 13 image (host driver 580 or newer); the GPU locks
# take onnxruntime-gpu from 1.31.1 and TensorRT 10 for CUDA 13 from pip (distillc.package.runtime_lock).
CUDA_IMAGE = "nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04"
# The CPU image's Python: the one the CPU lock is resolved for, to the patch.
PYTHON_IMAGE = "python:3.11.14-slim-bookworm"
# TensorRT packages install the cuda lock, then TensorRT's libraries. Those cannot be locked with hashes
# from PyPI: its tensorrt-cu13-libs is a stub that downloads the real wheel from pypi.nvidia.com when it
# is installed. The version is pinned instead.
TENSORRT_LIBS = "tensorrt-cu13-libs==10.16.1.11"


@dataclass(frozen=True)
class Target:
    name: str
    providers: tuple[str, ...]  # onnxruntime's execution providers, preferred first (distillc_runtime.providers)
    lock: str  # runtime/locks/<lock>.txt: the runtime's dependency closure, hash-pinned
    lock_requirements: tuple[str, ...]  # what the lock is resolved from besides the server's own imports
    python_version: str  # the Python the lock is resolved for and the image runs
    base_image: str
    python: str  # the interpreter's command in the image
    system_python: bool  # the image's distribution Python (installed with apt), not a python: image's
    gpu: bool  # the container needs a GPU
    export_graph: str  # "fused": onnxruntime-genai's builder (portable when it does not take the model); "portable"
    tensorrt: bool  # TensorRT: its optimization profiles; engines built on first start (minutes), kept on a volume
    extra_pip: str = ""  # installed after the lock (without hashes, see TENSORRT_LIBS)

    def latency_measurable_here(self) -> bool:
        """Whether this machine runs the target's first provider: only then are the build's latency
        figures the package's."""
        return runs_on_target(self.name)

    @property
    def startup_failures(self) -> int:
        """Readiness probes a container may fail while it starts: TensorRT builds its engines first."""
        return 120 if self.tensorrt else 24


TARGETS: dict[str, Target] = {
    "cpu": Target(
        name="cpu",
        providers=tuple(TARGET_PROVIDERS["cpu"]),
        lock="cpu",
        lock_requirements=("onnxruntime=={onnxruntime}",),
        python_version="3.11",
        base_image=PYTHON_IMAGE,
        python="python",
        system_python=False,
        gpu=False,
        export_graph="fused",  # the faster graph on CPUs, by measurement
        tensorrt=False,
    ),
    "cuda": Target(
        name="cuda",
        providers=tuple(TARGET_PROVIDERS["cuda"]),
        lock="cuda",
        lock_requirements=("onnxruntime-gpu>=1.31.1,<={onnxruntime}",),
        python_version="3.12",
        base_image=CUDA_IMAGE,
        python="python3",
        system_python=True,
        gpu=True,
        # The builder's fp32 graph would run its attention on the CPU under CUDA, and its fp16 CUDA graph
        # cannot be checked on a machine without a GPU: the portable graph's standard ops run everywhere.
        export_graph="portable",
        tensorrt=False,
    ),
    "tensorrt": Target(
        name="tensorrt",
        providers=tuple(TARGET_PROVIDERS["tensorrt"]),
        lock="cuda",
        lock_requirements=(),
        python_version="3.12",
        base_image=CUDA_IMAGE,
        python="python3",
        system_python=True,
        gpu=True,
        export_graph="portable",
        tensorrt=True,
        extra_pip=TENSORRT_LIBS,
    ),
}


def target(name: str) -> Target:
    return TARGETS[name]


def target_names() -> tuple[str, ...]:
    return tuple(TARGETS)
