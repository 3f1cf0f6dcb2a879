"""Assemble the inference package: ONNX model, tokenizer, runtime, requirements, Dockerfile, README, manifest."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

from distillc import __version__
from distillc.artifacts.export import variant_dir
from distillc.artifacts.gate import read_decision
from distillc.artifacts.verify import Verified, read_predictions, read_verified
from distillc.build.artifacts import link_tree, tree_files, write_json
from distillc.build.runner import Stage, StageContext
from distillc.package.policy import deployment, image, requirements
from distillc.package.render import markdown_code, markdown_text, render
from distillc.package.runtime_lock import check_versions
from distillc.spec.ir import SpecIR
from distillc.student.onnx_export import generation_config
from distillc.student.prompt import input_limit
from distillc.student.tensorrt import tensorrt_config
from distillc.targets import TARGETS
from distillc.task import task_type
from distillc.task.prompts import label_messages
from distillc_runtime.providers import TENSORRT_CONFIG
from distillc_runtime.selftest import SELFTEST


def runtime_dir() -> Path:
    """The runtime the package ships, read as data (so its files are in this stage's key)."""
    return Path(str(files("distillc_runtime")))


RENDERED = (
    ("Dockerfile.j2", "Dockerfile"),
    ("compose.yaml.j2", "compose.yaml"),
    ("k8s/deployment.yaml.j2", "k8s/deployment.yaml"),
    ("k8s/service.yaml.j2", "k8s/service.yaml"),
    ("k8s/hpa.yaml.j2", "k8s/hpa.yaml"),
    ("smoke_test.py.j2", "smoke_test.py"),
    ("dockerignore.j2", ".dockerignore"),
)


def selftest(verify: Path, verified: Verified, chosen: dict[str, Any], inputs: int) -> dict[str, Any]:
    """What the package's server checks at start-up (distillc_runtime.selftest): the first `inputs` held-out
    inputs (deploy.selftest_inputs: by default 32, enough to see a kernel that computes wrongly, as the
    saturating int8 product that flipped half the default package's answers, and few enough to answer in
    seconds at every start) with the shipped variant's answers and the fp32 student's, as verify measured
    them on this machine. It may fall one input, or 5%, below the build's agreement: on the same inputs only
    a near-tie decided by the last bits of a sum can come out otherwise on a CPU that computes correctly."""
    # Inputs the package refuses (over its input limit) have no answer to compare: they are not cases.
    answered = [
        (s, r)
        for s, r in zip(read_predictions(verify, chosen["name"]), read_predictions(verify, "fp32"), strict=True)
        if not s.get("refused")
    ][:inputs]
    shipped, reference = [s for s, _ in answered], [r for _, r in answered]
    cases = [
        {"id": s["id"], "input": s["input"], "answer": s["output"], "reference": r["output"], "expected": s["expected"]}
        for s, r in zip(shipped, reference, strict=True)
    ]
    n = max(len(cases), 1)
    return {
        "variant": chosen["name"],
        "agreement": round(sum(c["answer"] == c["reference"] for c in cases) / n, 6),
        "tolerance": round(max(0.05, 1 / n), 6),
        "built_on": verified.get("cpu", {}),
        "measured_with": verified["measured_with"],
        "cases": cases,
    }


def cascade_section(spec: SpecIR, point: dict[str, Any], agreement: dict[str, Any]) -> dict[str, Any]:
    """package.json's `cascade` (distillc_runtime.cascade): the threshold the gate chose, what it expects, the
    endpoint and the name of its key's variable (never the key), and the teacher's prompt as the build asked it."""
    cascade = spec.deploy.cascade
    assert cascade is not None
    kind = task_type(spec.task)
    return {
        "threshold": point["threshold"],
        "expected_escalation": point["escalation"],
        "expected_agreement": point["agreement"],
        "agreement": agreement,  # what the shadows' rolling agreement counts, as verify counted it
        "agreement_interval": point["interval"],
        "base_url": cascade.base_url,
        "model": cascade.model,
        "api_key_env": cascade.api_key_env,
        "timeout_s": cascade.timeout_s,
        "max_retries": cascade.max_retries,
        "messages": label_messages(spec.task, "")[:-1],  # the input is appended per request
        "response_format": kind.endpoint_format(spec.task) or None,
        "output_type": spec.task.output_type,
        "labels": list(kind.choices(spec.task)),
        "shadow_share": spec.deploy.shadow_share,
        "instructions": spec.task.instructions,  # the captured pairs' system prompt, as the inputs stage reads it
    }


def run(ctx: StageContext, export: Path, verify: Path, gate: Path) -> dict[str, Any]:
    spec = ctx.spec
    kind = task_type(spec.task)
    decision = read_decision(gate)
    chosen = decision["variant"]
    out = ctx.workdir / "package"
    # Hard links: the weights are stored once in the build folder. onnxruntime loads linked files; the onnx
    # package refuses external data with several links, so nothing may onnx.load these with their data.
    link_tree(variant_dir(export, chosen["name"]), out / "model")
    for path in (out / "model").iterdir():  # onnx writes weight files 0600; the container's server is not root
        path.chmod(0o644)
    linear = chosen["kind"] == "linear"  # no tokens: no input limit but the body's bytes, no TensorRT profile
    limit = None if linear else input_limit(spec.deploy.max_input_tokens, generation_config(out / "model"))
    row = TARGETS[spec.export.target]
    if row.tensorrt and not linear and (trt := tensorrt_config(out / "model" / "model.onnx", spec)):
        write_json(out / "model" / TENSORRT_CONFIG, trt)
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "locks")
    shutil.copytree(runtime_dir(), out / "distillc_runtime", ignore=ignored)
    latency = {"p50": chosen["p50_ms"], "p95": chosen["p95_ms"], "measured_with": decision["measured_with"]}
    info = {
        "name": spec.name,
        "distillc_version": __version__,
        "target": spec.export.target,
        "task": {
            "instructions": spec.task.instructions,
            "output_type": spec.task.output_type,
            "labels": list(kind.choices(spec.task)),
        },
        "student": {
            "kind": chosen["kind"],
            "base_model": None if linear else spec.student.base_model,
            "variant": chosen["name"],
            "layers": chosen["layers"],
            "parameters": chosen["parameters"],
        },
        "evaluation": {"metric": decision["metric"], "score": chosen["score"], "n": decision["n"]},
        # How the server scores an answer's confidence: the score verify found to rank disagreements best.
        "confidence": {"score": chosen["confidence"]["score"], "auroc": chosen["confidence"]["auroc"]},
        "deploy": {
            "port": spec.deploy.port,
            "max_new_tokens": spec.deploy.max_new_tokens,
            "max_batch_size": spec.deploy.max_batch_size,
            "max_request_bytes": spec.deploy.max_request_bytes,
            "max_queue": spec.deploy.max_queue,
            "request_timeout_s": spec.deploy.request_timeout_s,
            "header_timeout_s": spec.deploy.header_timeout_s,
            "max_connections": spec.deploy.max_connections,
            "max_input_tokens": limit,
            "latency_budget_ms": {"p50": spec.deploy.latency_p50_ms or None, "p95": spec.deploy.latency_p95_ms or None},
        },
        "latency_ms_at_build": latency,
    }
    if spec.deploy.cascade is not None and "cascade" in decision:
        info["cascade"] = cascade_section(spec, decision["cascade"], chosen["confidence"]["agreement"])
    model_files = tree_files(out / "model")  # hashed once: for the image tag and the manifest
    lock = requirements(spec.export.target)
    unverified = check_versions(lock)
    for line in unverified:
        ctx.log(f"warning: the package's lock differs from what this build verified the model with: {line}")
    info["runtime"] = {"lock": f"runtime/locks/{row.lock}.txt", "differs_from_build": unverified}
    write_json(out / "package.json", info)
    verified = read_verified(verify)
    proof = selftest(verify, verified, chosen, spec.deploy.selftest_inputs) if spec.deploy.selftest_inputs else None
    if proof:
        write_json(out / SELFTEST, proof)  # before the README, which states its figures, and the manifest
    (out / "requirements.txt").write_text(lock, encoding="utf-8")
    example = spec.task.examples[0]
    values = dict(
        name=spec.name,
        distillc_version=__version__,
        port=spec.deploy.port,
        target=spec.export.target,
        example_input=example.input,
        output_type=spec.task.output_type,
        answer_check=kind.answer_check(spec.task),
        selftest=proof,
        linear=linear,
        **image(spec.export.target),
        **deployment(spec, out / "model", model_files, chosen.get("memory_mb")),
    )
    for template, name in RENDERED:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(render(template, **values), encoding="utf-8")
    (out / "README.md").write_text(
        render(
            "package_README.md.j2",
            **{**values, "labels": [markdown_text(label) for label in kind.choices(spec.task)]},
            # Quoted from the spec: escaped, so that a backtick fence or HTML in it cannot reshape the README.
            spec_file=markdown_code(Path(spec.spec_path).name),
            instructions=markdown_text(spec.task.instructions),
            base_model=markdown_code(spec.student.base_model),
            parameters=chosen["parameters"],
            variant=chosen["name"],
            metric=decision["metric"],
            score=chosen["score"],
            eval_n=decision["n"],
            latency=latency,
            max_request_bytes=spec.deploy.max_request_bytes,
            max_input_tokens=limit,
            max_queue=spec.deploy.max_queue,
            request_timeout_s=spec.deploy.request_timeout_s,
            header_timeout_s=spec.deploy.header_timeout_s,
            max_connections=spec.deploy.max_connections,
            example_output=example.output,
            confidence_score=chosen["confidence"]["score"],
            built_on=verified.get("cpu") or {"level": "an unrecorded CPU", "machine": "?", "flags": []},
        ),
        encoding="utf-8",
    )
    files = {f"model/{name}": digest for name, digest in model_files.items()}
    files |= tree_files(out, skip=lambda name: name.startswith("model/"))
    write_json(out / "manifest.json", {"name": spec.name, "files": files})
    return {
        "variant": chosen["name"],
        "files": len(files) + 1,
        "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }


STAGE = Stage(
    name="package",
    version=8,  # 8: the cascade; 7: the confidence score; 6: a linear student's package
    # spec_path: the package's README names the spec file it was built from.
    reads=(
        "name",
        "spec_path",
        "task",
        "deploy",
        "student.base_model",
        "student.max_seq_len",
        "export",
    ),
    needs=("export", "verify", "gate"),
    produces=("package/manifest.json", "package/Dockerfile", "package/model/model.onnx"),
    run=run,
)
