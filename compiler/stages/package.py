"""Assemble the inference package: ONNX model, tokenizer, runtime, requirements, Dockerfile, README, manifest."""

from __future__ import annotations

import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from distillc import __version__
from distillc.artifacts import read_json, tree_files, write_json
from distillc.render import render
from distillc.runner import META, StageContext
from distillc.selection import choose_variant
from distillc.stages.export import variant_dir
from distillc.tensorrt import tensorrt_config
from distillc_runtime.providers import TENSORRT_CONFIG

NAME = "package"
VERSION = 1
READS = ("name", "task", "deploy", "student.base_model", "student.max_seq_len", "evaluation.min_score", "export")
NEEDS = ("export", "verify")
# onnxruntime-gpu 1.31.1 (checked in its wheel) needs CUDA 13 (libcudart.so.13, libcublas.so.13), cuDNN 9
# and, for TensorRT, libnvinfer.so.10: hence a CUDA 13 image (host driver 580 or newer) and TensorRT 10
# built for CUDA 13. GPU releases of onnxruntime come out after the CPU one, so GPU packages take the
# newest onnxruntime-gpu from 1.31 up to the version the build ran.
CUDA_IMAGE = "nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04"
GPU_ONNXRUNTIME_FLOOR = (1, 31, 1)
TENSORRT_LIBS = "tensorrt-cu13-libs>=10,<11"
RUNTIME_REQUIREMENTS = ("numpy", "onnxruntime", "tokenizers", "fastapi", "uvicorn", "pydantic", "prometheus-client")


def runtime_dir() -> Path:
    import distillc_runtime

    return Path(distillc_runtime.__file__).parent


def requirements(target: str, output_type: str = "text") -> str:
    """The runtime's dependencies, pinned to the versions the build verified the model with (llguidance
    only for JSON tasks, whose decoding follows the schema)."""
    lines = []
    for name in (*RUNTIME_REQUIREMENTS, *(["llguidance"] if output_type == "json" else [])):
        try:
            installed = version(name)
        except PackageNotFoundError:
            lines.append(name)
            continue
        if name == "onnxruntime" and target in ("cuda", "tensorrt"):
            lines.append(gpu_onnxruntime(installed))
        else:
            lines.append(f"{name}=={installed}")
    if target == "tensorrt":
        lines.append(TENSORRT_LIBS)
    return "\n".join(lines) + "\n"


def gpu_onnxruntime(cpu_version: str) -> str:
    """onnxruntime-gpu from the first CUDA 13 release up to the version the build verified with."""
    floor = ".".join(map(str, GPU_ONNXRUNTIME_FLOOR))
    numbers = tuple(int(x) for x in cpu_version.split("+")[0].split(".")[:3] if x.isdigit())
    ceiling = cpu_version if numbers >= GPU_ONNXRUNTIME_FLOOR else floor
    return f"onnxruntime-gpu>={floor},<={ceiling}"


def image(target: str) -> dict[str, Any]:
    """Base image and Python for the Dockerfile: slim CPython for CPU; CUDA + cuDNN runtime for GPUs
    (TensorRT's libraries come from pip, see TENSORRT_LIBS)."""
    if target in ("cuda", "tensorrt"):
        return {"base_image": CUDA_IMAGE, "python": "python3", "system_python": True, "tensorrt": target == "tensorrt"}
    python_version = ".".join(platform.python_version_tuple()[:2])
    return {
        "base_image": f"python:{python_version}-slim",
        "python": "python",
        "system_python": False,
        "tensorrt": False,
    }


def run(ctx: StageContext, export: Path, verify: Path) -> dict[str, Any]:
    spec = ctx.spec
    verified = read_json(verify / META)["summary"]
    chosen = choose_variant(spec, verified)
    out = ctx.workdir / "package"
    # Copies, not hard links: onnx refuses a weights file with several links.
    shutil.copytree(variant_dir(export, chosen["name"]), out / "model")
    if spec.export.target == "tensorrt" and (trt := tensorrt_config(out / "model" / "model.onnx", spec)):
        write_json(out / "model" / TENSORRT_CONFIG, trt)
    shutil.copytree(runtime_dir(), out / "distillc_runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    latency = {"p50": chosen["p50_ms"], "p95": chosen["p95_ms"], "measured_with": verified["measured_with"]}
    info = {
        "name": spec.name,
        "distillc_version": __version__,
        "target": spec.export.target,
        "task": {
            "instructions": spec.task.instructions,
            "output_type": spec.task.output_type,
            "labels": list(spec.task.labels),
        },
        "student": {"base_model": spec.student.base_model, "variant": chosen["name"]},
        "evaluation": {"metric": verified["metric"], "score": chosen["score"], "n": verified["n"]},
        "deploy": {
            "port": spec.deploy.port,
            "max_new_tokens": spec.deploy.max_new_tokens,
            "max_batch_size": spec.deploy.max_batch_size,
            "max_request_bytes": spec.deploy.max_request_bytes,
            "max_queue": spec.deploy.max_queue,
            "request_timeout_s": spec.deploy.request_timeout_s,
            "max_input_tokens": spec.deploy.max_input_tokens,
            "latency_budget_ms": {"p50": spec.deploy.latency_p50_ms or None, "p95": spec.deploy.latency_p95_ms or None},
        },
        "latency_ms_at_build": latency,
    }
    write_json(out / "package.json", info)
    (out / "requirements.txt").write_text(requirements(spec.export.target, spec.task.output_type), encoding="utf-8")
    example = spec.task.examples[0]
    values = dict(name=spec.name, distillc_version=__version__, port=spec.deploy.port, **image(spec.export.target))
    (out / "Dockerfile").write_text(render("Dockerfile.j2", **values), encoding="utf-8")
    (out / "README.md").write_text(
        render(
            "package_README.md.j2",
            **values,
            spec_file=Path(spec.spec_path).name,
            instructions=spec.task.instructions,
            output_type=spec.task.output_type,
            labels=list(spec.task.labels),
            base_model=spec.student.base_model,
            variant=chosen["name"],
            target=spec.export.target,
            metric=verified["metric"],
            score=chosen["score"],
            eval_n=verified["n"],
            latency=latency,
            example_input=example.input,
            max_request_bytes=spec.deploy.max_request_bytes,
            max_input_tokens=spec.deploy.max_input_tokens,
            max_queue=spec.deploy.max_queue,
            request_timeout_s=spec.deploy.request_timeout_s,
            example_output=example.output,
        ),
        encoding="utf-8",
    )
    files = tree_files(out)
    write_json(out / "manifest.json", {"name": spec.name, "files": files})
    return {
        "variant": chosen["name"],
        "files": len(files) + 1,
        "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }
