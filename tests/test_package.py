"""Emitted files: the golden Dockerfile, and the quality gate that stops a build before packaging."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from distillc.package.policy import image, requirements
from distillc.package.render import render
from distillc.package.runtime_lock import locked_versions
from distillc.targets import TARGETS
from tests.conftest import review_texts, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc, read_json

GOLDEN = Path(__file__).parent / "golden"


# What the deployment files take besides the target's row: fixed, so that only the table varies.
DEPLOYMENT = {"image": "review-sentiment:0123456789ab", "model_memory_mi": 200, "memory_mi": 264, "cpu": 1,
              "grace_s": 40, "startup_failures": 24}  # fmt: skip
RENDERED = {
    "Dockerfile.j2": "Dockerfile",
    "compose.yaml.j2": "compose.yaml",
    "k8s/deployment.yaml.j2": "deployment.yaml",
}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("template", sorted(RENDERED))
def test_each_targets_files_match_golden(target: str, template: str) -> None:
    """Every target of the table, rendered from its row alone: a new row is one golden file per template."""
    values = dict(name="review-sentiment", distillc_version="0.0.0", port=8080, selftest=True, target=target)
    rendered = render(template, **values, **image(target), **DEPLOYMENT)
    golden = GOLDEN / f"{RENDERED[template]}.{target}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_gpu_packages_take_a_cuda_13_onnxruntime_and_no_training_stack() -> None:
    cpu, cuda = requirements("cpu"), requirements("cuda")
    assert "\nonnxruntime==" in cpu and "onnxruntime-gpu" not in cpu
    gpu = locked_versions(cuda)["onnxruntime-gpu"]
    assert tuple(int(x) for x in gpu.split(".")[:3]) >= (1, 31, 1)  # the first CUDA 13 build
    assert requirements("tensorrt") == cuda
    assert "cuda:13." in image("cuda")["base_image"]
    assert not any(name in locked_versions(cpu + cuda) for name in ("torch", "transformers"))


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


def test_every_file_the_container_copies_is_readable_by_its_server(tiny_package: Path) -> None:
    """The image copies the package as root and runs the server as uid 10001: a file only its owner may read
    (onnx writes weight files 0600) would stop the server at start."""
    unreadable = [
        str(p.relative_to(tiny_package))
        for p in tiny_package.rglob("*")
        if p.is_file() and p.stat().st_mode & 0o004 == 0
    ]
    assert unreadable == []
