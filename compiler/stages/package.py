"""Assemble the inference package: ONNX model, tokenizer, runtime, requirements, Dockerfile, README, manifest."""

from __future__ import annotations

import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from distillc import __version__
from distillc.artifacts import read_json, tree_files, write_json
from distillc.render import render
from distillc.runner import META, StageContext

NAME = "package"
VERSION = 1
READS = ("name", "task", "deploy", "student.base_model")
NEEDS = ("export", "evaluate")
RUNTIME_REQUIREMENTS = ("numpy", "onnxruntime", "tokenizers", "fastapi", "uvicorn", "pydantic")


def runtime_dir() -> Path:
    import distillc_runtime

    return Path(distillc_runtime.__file__).parent


def requirements() -> str:
    """The runtime's dependencies, pinned to the versions the build verified the model with."""
    lines = []
    for name in RUNTIME_REQUIREMENTS:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def run(ctx: StageContext, export: Path, evaluate: Path) -> dict[str, Any]:
    spec = ctx.spec
    out = ctx.workdir / "package"
    _link_tree(export / "model", out / "model")
    shutil.copytree(runtime_dir(), out / "distillc_runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    evaluation = read_json(evaluate / META)["summary"]
    latency = read_json(export / META)["summary"].get("latency_ms") or {}
    info = {
        "name": spec.name,
        "distillc_version": __version__,
        "task": {
            "instructions": spec.task.instructions,
            "output_type": spec.task.output_type,
            "labels": list(spec.task.labels),
        },
        "student": {"base_model": spec.student.base_model},
        "evaluation": {"metric": evaluation["metric"], "score": evaluation["score"], "n": evaluation["n"]},
        "deploy": {
            "port": spec.deploy.port,
            "max_new_tokens": spec.deploy.max_new_tokens,
            "latency_budget_ms": {"p50": spec.deploy.latency_p50_ms or None, "p95": spec.deploy.latency_p95_ms or None},
        },
        "latency_ms_at_build": latency,
    }
    write_json(out / "package.json", info)
    (out / "requirements.txt").write_text(requirements(), encoding="utf-8")
    example = spec.task.examples[0]
    values = dict(
        name=spec.name,
        distillc_version=__version__,
        port=spec.deploy.port,
        python_version=".".join(platform.python_version_tuple()[:2]),
    )
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
            metric=evaluation["metric"],
            score=evaluation["score"],
            eval_n=evaluation["n"],
            latency=latency,
            example_input=example.input,
            example_output=example.output,
        ),
        encoding="utf-8",
    )
    files = tree_files(out)
    write_json(out / "manifest.json", {"name": spec.name, "files": files})
    return {"files": len(files) + 1, "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link the (large, immutable) model files instead of copying them; copy where links fail."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
