"""The package proves itself on the CPU it runs on: the build records a self-test, the server runs it before
it turns ready, and a variant that answers otherwise than the build measured is refused, over real HTTP."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.external_data_helper import ExternalDataInfo

from distillc_runtime import cpu
from tests.helpers import http, read_json, runtime, stage_artifact, start


def build_dir(package: Path) -> Path:
    """The build folder a package was made in: the nearest folder above it with the build's manifest."""
    return next(p for p in package.parents if (p / "manifest.json").is_file() and (p / "cache").is_dir())


def check(package: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        runtime(package, "check", str(package), *args),
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )


def report(stdout: str) -> dict:
    """The self-test's JSON summary in what `check --answers` printed."""
    return json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])


def refresh_manifest(package: Path) -> None:
    """Record the package's files as they are now, as a build that shipped them would have."""
    manifest = read_json(package / "manifest.json")
    for name in manifest["files"]:
        if (package / name).is_file():
            manifest["files"][name] = hashlib.sha256((package / name).read_bytes()).hexdigest()
    (package / "manifest.json").write_text(json.dumps(manifest))


def negate_final_norm(model_dir: Path) -> set[str]:
    """Break a variant where it stands: negate the final norm's scale in every graph of `model_dir`, so every
    logit changes sign and a two-label answer turns into the other label. Returns the graphs changed."""
    patched: set[tuple[str, int]] = set()
    changed: set[str] = set()
    for graph_file in sorted(model_dir.glob("*.onnx")):
        model = onnx.load(str(graph_file), load_external_data=False)
        for tensor in model.graph.initializer:
            if not tensor.name.endswith("final_norm_layernorm.weight"):
                continue
            changed.add(graph_file.name)
            if tensor.data_location != onnx.TensorProto.EXTERNAL:  # small tensors are stored in the graph
                tensor.raw_data = (-np.frombuffer(tensor.raw_data, dtype=np.float32)).tobytes()
                onnx.save(model, str(graph_file))  # its external tensors stay where they are
                patched.add((graph_file.name, -1))
                continue
            info = ExternalDataInfo(tensor)
            offset = int(info.offset or 0)
            if (info.location, offset) in patched:  # shared between the two int8 graphs: stored once
                continue
            data = model_dir / info.location
            raw = bytearray(data.read_bytes())
            values = np.frombuffer(raw, dtype=np.float32, count=int(info.length) // 4, offset=offset)
            raw[offset : offset + values.nbytes] = (-values).tobytes()
            data.write_bytes(bytes(raw))
            patched.add((info.location, offset))
    return changed


def test_the_package_records_its_answers_and_the_cpu_it_verified_on(tiny_package: Path) -> None:
    recorded = read_json(tiny_package / "selftest.json")
    shipped = read_json(tiny_package / "package.json")["student"]["variant"]
    verify = stage_artifact(build_dir(tiny_package), "verify")
    answers = [json.loads(line) for line in (verify / f"{shipped}.predictions.jsonl").read_text().splitlines()]
    fp32 = [json.loads(line) for line in (verify / "fp32.predictions.jsonl").read_text().splitlines()]
    assert recorded["variant"] == shipped
    assert len(recorded["cases"]) == min(32, len(answers)) > 0
    for case, answer, reference in zip(recorded["cases"], answers, fp32, strict=False):
        assert (case["input"], case["answer"], case["reference"]) == (
            answer["input"],
            answer["output"],
            reference["output"],
        )
    n = len(recorded["cases"])
    assert recorded["agreement"] == round(sum(c["answer"] == c["reference"] for c in recorded["cases"]) / n, 6)
    assert recorded["tolerance"] == round(max(0.05, 1 / n), 6)
    assert recorded["built_on"] == read_json(verify / "verified.json")["cpu"] == cpu.describe()
    readme = (tiny_package / "README.md").read_text()
    assert f"verified the\n{shipped} weights on {cpu.describe()['level']}" in readme
    assert "check . --answers" in readme


def test_check_answers_passes_on_the_cpu_that_built_it(tiny_package: Path) -> None:
    done = check(tiny_package, "--answers")
    assert done.returncode == 0, done.stderr
    summary = report(done.stdout)
    assert summary["passed"] and summary["same_as_build"] == 1.0 and summary["differing"] == []
    assert "self-test passed" in done.stdout


@pytest.fixture(scope="module")
def broken_package(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    package = shutil.copytree(tiny_package, tmp_path_factory.mktemp("broken") / "package")
    recorded = read_json(package / "selftest.json")
    # Every answer flips, so agreement falls to 1 - the build's: a drop past the tolerance only if the build's
    # agreement is well above one half (it is 1.0 for a variant that answers as fp32 does).
    assert 1 - recorded["agreement"] < recorded["agreement"] - recorded["tolerance"]
    assert negate_final_norm(package / "model") == {p.name for p in (package / "model").glob("*.onnx")}
    refresh_manifest(package)  # the files are as a (broken) build shipped them: only the answers can tell
    return package


def test_check_answers_fails_for_a_broken_variant(broken_package: Path) -> None:
    assert check(broken_package).returncode == 0  # every file matches its manifest
    done = check(broken_package, "--answers")
    assert done.returncode == 1
    variant = read_json(broken_package / "selftest.json")["variant"]
    assert f"self-test failed: the {variant} model agrees with the fp32 student on" in done.stderr
    assert cpu.describe()["level"] in done.stderr
    summary = report(done.stdout)
    assert not summary["passed"] and summary["same_as_build"] == 0.0 and summary["differing"]


def test_the_server_refuses_readiness_and_requests_for_a_broken_variant(broken_package: Path) -> None:
    process, port = start(broken_package)
    try:
        url = f"http://127.0.0.1:{port}"
        status, body = http("GET", f"{url}/readyz")
        assert status == 503 and body["status"] == "self-test failed"
        assert "agrees with the fp32 student on" in body["reason"] and cpu.describe()["level"] in body["reason"]
        status, body = http("GET", f"{url}/healthz")  # alive: a restart on the same CPU would not help
        assert status == 200 and body["selftest"]["passed"] is False
        assert "differing" not in body["selftest"]  # the build's inputs are not served to whoever asks
        status, body = http("POST", f"{url}/v1/predict", {"input": "the kettle was lovely"})
        assert status == 503 and "self-test failed" in body["detail"]
        name = read_json(broken_package / "package.json")["name"]
        chat = {"model": name, "messages": [{"role": "user", "content": "the kettle was lovely"}]}
        status, body = http("POST", f"{url}/v1/chat/completions", chat)
        assert status == 503 and "self-test failed" in body["detail"]
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            metrics = response.read().decode()
        agreement = read_json(broken_package / "selftest.json")["agreement"]
        line = next(x for x in metrics.splitlines() if x.startswith("distillc_selftest_agreement "))
        assert float(line.split()[1]) == pytest.approx(1 - agreement, abs=1e-6)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_server_is_ready_when_the_self_test_passes(tiny_package: Path) -> None:
    process, port = start(tiny_package)
    try:
        status, body = http("GET", f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and body["status"] == "ready"
        status, body = http("GET", f"http://127.0.0.1:{port}/healthz")
        assert body["selftest"]["passed"] is True and body["selftest"]["cpu"] == cpu.describe()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_on_another_execution_provider_than_the_builds_the_self_test_is_reported_not_enforced(
    broken_package: Path, tmp_path: Path
) -> None:
    """A GPU package verified where there was no GPU: its answers there come from other kernels."""
    package = shutil.copytree(broken_package, tmp_path / "package")
    recorded = read_json(package / "selftest.json")
    assert recorded["measured_with"] == "CPUExecutionProvider"
    (package / "selftest.json").write_text(json.dumps({**recorded, "measured_with": "CUDAExecutionProvider"}))
    refresh_manifest(package)
    process, port = start(package)
    try:
        assert http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200
        selftest = http("GET", f"http://127.0.0.1:{port}/healthz")[1]["selftest"]
        assert not selftest["passed"] and not selftest["binding"] and not selftest["refuses"]
        assert selftest["provider"] == "CPUExecutionProvider"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert check(package, "--answers").returncode == 1  # by hand, the answers are compared all the same


def test_selftest_inputs_sets_how_many_inputs_the_package_carries_and_zero_ships_none(
    tiny_model: Path, tmp_path: Path
) -> None:
    from distillc import api
    from tests.conftest import edit_spec, review_texts, sentiment, write_spec
    from tests.fake_teacher import FakeTeacher

    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60))
        edit_spec(spec, {"student.epochs": 2, "evaluation.min_score": 0.0, "deploy.selftest_inputs": 0})
        package = api.build(spec, out=tmp_path / "out", emit=lambda e: None).package_dir
        assert not (package / "selftest.json").exists()
        assert "selftest.json" not in read_json(package / "manifest.json")["files"]
        assert "selftest.json" not in (package / "Dockerfile").read_text()
        assert "carries no self-test (`deploy.selftest_inputs: 0`)" in (package / "README.md").read_text()
        assert check(package, "--answers").returncode == 2  # nothing to test: said, not passed
        process, port = start(package)
        try:
            assert http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200
            assert http("GET", f"http://127.0.0.1:{port}/healthz")[1]["selftest"] is None
        finally:
            process.terminate()
            process.wait(timeout=30)

        edit_spec(spec, {"deploy.selftest_inputs": 3})
        result = api.build(spec, out=tmp_path / "out", emit=lambda e: None)
        assert "label" not in result.ran and result.ran[-1] == "package"  # no teacher request: a package change
        assert len(read_json(result.package_dir / "selftest.json")["cases"]) == 3
