"""End to end through the CLI: a real teacher over HTTP, a tiny real student, the package served over HTTP."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distillc.build.artifacts import LINKED_BYTES, disk_bytes
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc, free_port, http, parity_rows, read_json, wait_healthy

STAGES = ["inputs", "label", "split", "linear", "train", "prune", "evaluate", "export", "verify", "gate", "package"]
FORBIDDEN = {"torch", "transformers", "peft", "accelerate", "distillc"}


def test_build_cache_and_serve(tmp_path: Path, tiny_model: Path) -> None:
    inputs = review_texts()
    with FakeTeacher(sentiment) as teacher:
        # fp32 alone: its weights are large enough to be linked, not copied (the tiny model's int4 is not).
        changes = {"export.quantization": ["fp32"]}
        spec = write_spec(
            tmp_path / "project", base_url=teacher.base_url, student=str(tiny_model), inputs=inputs, changes=changes
        )
        out = tmp_path / "out"

        first = distillc("build", str(spec), "--out", str(out))
        assert first.returncode == 0, first.stderr
        assert teacher.requests == len(inputs)
        manifest = read_json(out / "manifest.json")
        assert [s["name"] for s in manifest["stages"]] == STAGES
        assert all(s["status"] == "miss" for s in manifest["stages"])
        by_name = {s["name"]: s for s in manifest["stages"]}
        assert by_name["train"]["inputs"] == {"split": by_name["split"]["digest"]}
        assert "model/model.safetensors" in by_name["train"]["outputs"]
        assert by_name["train"]["seconds"] > 0
        report = read_json(out / "report.json")
        assert report["status"] == "succeeded"
        assert report["evaluation"]["metric"] == "accuracy"
        evaluation = report["evaluation"]
        assert evaluation["score"] >= 0.9  # the rule is learnable; a broken trainer scores ~0.5
        assert evaluation["interval"][0] <= evaluation["score"] <= evaluation["interval"][1]
        # The baseline: the teacher's most common training answer for every input, scored the same way.
        majority = evaluation["baselines"]["majority"]
        predictions = _jsonl(out / by_name["evaluate"]["artifact"] / "predictions.jsonl")
        share = sum(p["expected"] == majority["answer"] for p in predictions) / len(predictions)
        assert majority["value"] == pytest.approx(share, abs=1e-6) and majority["value"] < evaluation["score"]
        # The untrained base model, shown the spec's examples: the tiny random base cannot do the task.
        base = evaluation["baselines"]["few_shot_base"]
        assert base["interval"][0] <= base["value"] <= base["interval"][1] and base["value"] < evaluation["score"]
        parity = parity_rows(out)
        assert len(parity) == report["evaluation"]["n"] and all(r["torch"] == r["onnx"] for r in parity)
        assert report["label"]["labeled"] == len(inputs)
        _assert_weights_stored_once(out)

        # Nothing changed: no stage runs, no teacher request is sent.
        second = distillc("build", str(spec), "--out", str(out))
        assert second.returncode == 0, second.stderr
        assert "ran: nothing (all cached)" in second.stdout
        assert teacher.requests == len(inputs)
        assert all(s["status"] == "hit" for s in read_json(out / "manifest.json")["stages"])

        # Only student.epochs changes: train and later stages re-run, the teacher is not asked again.
        edit_spec(spec, {"student.epochs": 31})
        third = distillc("build", str(spec), "--out", str(out))
        assert third.returncode == 0, third.stderr
        assert teacher.requests == len(inputs)
        stages = {s["name"]: s for s in read_json(out / "manifest.json")["stages"]}
        assert [n for n in STAGES if stages[n]["status"] == "miss"] == [
            "train",
            "prune",
            "evaluate",
            "export",
            "verify",
            "gate",
            "package",
        ]
        assert stages["train"]["reason"] == "changed: spec.student.epochs"

    package = out / "package"
    _assert_package_files(package)
    _assert_runtime_imports_no_torch(package)
    predictions = [row for row in _jsonl(out / stages["evaluate"]["artifact"] / "predictions.jsonl")]
    # Each answer's confidence, as verify measured the variant that ships.
    shipped = read_json(package / "package.json")["student"]["variant"]
    verified = {r["id"]: r for r in _jsonl(out / stages["verify"]["artifact"] / f"{shipped}.predictions.jsonl")}
    predictions = [row | {"confidence": verified[row["id"]]["confidence"]} for row in predictions]
    _serve_and_query(package, predictions)


def _assert_weights_stored_once(out: Path) -> None:
    """Large files with the same bytes (the shipped variant in export, the package artifact and package/) are
    one file on disk, so package/ costs the build folder next to nothing."""
    by_content: dict[str, set[int]] = {}
    for path in out.rglob("*"):
        if path.is_file() and path.stat().st_size >= LINKED_BYTES:
            by_content.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), set()).add(path.stat().st_ino)
    assert by_content and all(len(inodes) == 1 for inodes in by_content.values())
    assert (out / "package" / "model" / "model.onnx.data").stat().st_nlink == 3
    everything_else = [p for p in out.iterdir() if p.name != "package"]
    small = sum(
        f.stat().st_size for f in (out / "package").rglob("*") if f.is_file() and f.stat().st_size < LINKED_BYTES
    )
    assert disk_bytes([out]) - disk_bytes(everything_else) == small


def _assert_package_files(package: Path) -> None:
    for name in (
        "Dockerfile",
        "README.md",
        "requirements.txt",
        "package.json",
        "manifest.json",
        "model/model.onnx",
        "model/tokenizer.json",
        "model/generation.json",
        "distillc_runtime/server.py",
    ):
        assert (package / name).is_file(), name
    requirements = (package / "requirements.txt").read_text()
    assert "onnxruntime" in requirements
    assert not any(f in requirements for f in ("torch", "transformers"))
    files = read_json(package / "manifest.json")["files"]
    for rel, digest in files.items():
        assert hashlib.sha256((package / rel).read_bytes()).hexdigest() == digest, rel
    on_disk = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    assert on_disk - set(files) == {"manifest.json"}


def _assert_runtime_imports_no_torch(package: Path) -> None:
    for source in (package / "distillc_runtime").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not {n.split(".")[0] for n in names} & FORBIDDEN, (source, names)
    probe = (
        "import sys; import distillc_runtime.server, distillc_runtime.generate; "
        f"bad = {sorted(FORBIDDEN)!r}; print([m for m in bad if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=package, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _serve_and_query(package: Path, predictions: list[dict]) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "distillc", "serve", str(package), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/healthz", server)
        health = {"status": "ok", "model": "review-sentiment", "target": "cpu", "providers": ["CPUExecutionProvider"]}
        status, body = http("GET", f"{base}/healthz")
        selftest = body.pop("selftest")
        assert (status, body) == (200, health)
        # The self-test answered the recorded held-out inputs on this CPU as the build did, before serving.
        recorded = read_json(package / "selftest.json")
        assert selftest["passed"] and selftest["same_as_build"] == 1.0
        assert selftest["n"] == len(recorded["cases"]) == min(32, len(predictions))
        for row in predictions:
            # What ships answers exactly as the evaluated student did, and is as sure of it as verify measured.
            served = (200, {"output": row["output"], "confidence": row["confidence"], "route": "student"})
            assert http("POST", f"{base}/v1/predict", {"input": row["input"]}) == served
        # Concurrent requests are batched by the server; each still gets the answer it would get alone.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda r: http("POST", f"{base}/v1/predict", {"input": r["input"]}), predictions))
        assert [(status, body["output"]) for status, body in answers] == [(200, row["output"]) for row in predictions]
        assert [body["confidence"] for _, body in answers] == pytest.approx([r["confidence"] for r in predictions])
        status, body = http("POST", f"{base}/v1/predict", {"input": "the kettle was superb"})
        assert (status, body["output"]) == (200, "positive") and 0.5 < body["confidence"] <= 1.0
        assert http("POST", f"{base}/v1/predict", {"text": "wrong field"})[0] == 422
        assert http("POST", f"{base}/v1/predict", {"input": ""})[0] == 422
        assert http("POST", f"{base}/v1/predict", raw=b"{not json")[0] == 422
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.raises(OSError):  # stopping `distillc serve` stopped the server itself
        http("GET", f"{base}/healthz")


def _jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
