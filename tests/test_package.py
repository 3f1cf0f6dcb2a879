"""Emitted files: the golden Dockerfile, and the quality gate that stops a build before packaging."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from distillc.render import render
from distillc.stages.package import gpu_onnxruntime, image, requirements
from tests.conftest import review_texts, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc, read_json

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("target", ["cpu", "cuda", "tensorrt"])
def test_dockerfile_matches_golden(target: str) -> None:
    base = {"base_image": "python:3.11-slim", "python": "python", "system_python": False, "tensorrt": False}
    values = base if target == "cpu" else image(target)
    rendered = render("Dockerfile.j2", name="review-sentiment", distillc_version="0.0.0", port=8080, **values)
    golden = GOLDEN / f"Dockerfile.{target}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_gpu_packages_take_a_cuda_13_onnxruntime_up_to_the_verified_version() -> None:
    cpu, cuda = requirements("cpu").splitlines(), requirements("cuda").splitlines()
    [ort] = [line for line in cpu if line.startswith("onnxruntime")]
    built_with = ort.split("==")[1]
    assert f"onnxruntime-gpu>=1.31.1,<={built_with}" in cuda or built_with < "1.31.1"
    assert gpu_onnxruntime("1.32.0") == "onnxruntime-gpu>=1.31.1,<=1.32.0"  # 1.32.0 has no GPU release yet
    assert gpu_onnxruntime("1.24.1") == "onnxruntime-gpu>=1.31.1,<=1.31.1"  # older GPU builds were not checked
    assert "cuda:13." in image("cuda")["base_image"]
    assert not any(line.startswith(("torch", "transformers")) for line in cpu + cuda)


def test_dockerfile_layers_change_least_first() -> None:
    lines = [line for line in (GOLDEN / "Dockerfile.cpu").read_text().splitlines() if line.startswith(("COPY", "RUN"))]
    order = [line.split()[1] for line in lines if line.startswith("COPY")]
    assert order == ["requirements.txt", "distillc_runtime/", "package.json", "model/", "manifest.json"]


def test_score_below_min_score_fails_after_writing_the_report(tmp_path: Path, tiny_model: Path) -> None:
    def coin(text: str) -> str:  # labels with no pattern to learn: held-out agreement stays near chance
        return "positive" if hashlib.sha256(text.encode()).digest()[0] % 2 else "negative"

    with FakeTeacher(coin) as teacher:
        spec = write_spec(
            tmp_path,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(80),
            min_score=1.0,
            epochs=3,
        )
        result = distillc("build", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "error[E501]: student accuracy" in result.stderr
    assert "is below evaluation.min_score 1.0" in result.stderr
    assert "Traceback" not in result.stderr
    report = read_json(tmp_path / "out" / "report.json")
    assert report["status"] == "failed_gate"
    assert report["evaluation"]["passed"] is False
    assert not (tmp_path / "out" / "package").exists()
    assert read_json(tmp_path / "out" / "manifest.json")["status"] == "failed_gate"
