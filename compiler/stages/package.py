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

NAME = "package"
VERSION = 1
READS = ("name", "task", "deploy", "student.base_model", "evaluation.min_score", "export")
NEEDS = ("export", "verify")
CUDA_IMAGE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
RUNTIME_REQUIREMENTS = ("numpy", "onnxruntime", "tokenizers", "fastapi", "uvicorn", "pydantic")


def runtime_dir() -> Path:
    import distillc_runtime

    return Path(distillc_runtime.__file__).parent


def requirements(target: str) -> str:
    """The runtime's dependencies, pinned to the versions the build verified the model with."""
    lines = []
    for name in RUNTIME_REQUIREMENTS:
        try:
            pinned = f"{name}=={version(name)}"
        except PackageNotFoundError:
            pinned = name
        if name == "onnxruntime" and target == "cuda":
            pinned = pinned.replace("onnxruntime", "onnxruntime-gpu", 1)  # same release, CUDA build
        lines.append(pinned)
    return "\n".join(lines) + "\n"


def image(target: str) -> dict[str, Any]:
    """Base image and Python for the Dockerfile: slim CPython for CPU; CUDA + cuDNN runtime for GPUs."""
    if target == "cuda":
        return {"base_image": CUDA_IMAGE, "python": "python3", "system_python": True}
    python_version = ".".join(platform.python_version_tuple()[:2])
    return {"base_image": f"python:{python_version}-slim", "python": "python", "system_python": False}


def run(ctx: StageContext, export: Path, verify: Path) -> dict[str, Any]:
    spec = ctx.spec
    verified = read_json(verify / META)["summary"]
    chosen = choose_variant(spec, verified)
    out = ctx.workdir / "package"
    # Copies, not hard links: onnx refuses a weights file with several links.
    shutil.copytree(variant_dir(export, chosen["name"]), out / "model")
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
            "latency_budget_ms": {"p50": spec.deploy.latency_p50_ms or None, "p95": spec.deploy.latency_p95_ms or None},
        },
        "latency_ms_at_build": latency,
    }
    write_json(out / "package.json", info)
    (out / "requirements.txt").write_text(requirements(spec.export.target), encoding="utf-8")
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
