"""export.target: tensorrt, as far as a machine without a GPU can check it: the package, its TensorRT
profile and provider options, the input-length limit, and scoring on the CPU with latency not gated."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest
from fastapi.testclient import TestClient

from distillc import api
from distillc.targets import TENSORRT_LIBS
from distillc_runtime import generate, providers, server
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher


@pytest.fixture(scope="module")
def tensorrt_build(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> api.BuildResult:
    folder = tmp_path_factory.mktemp("tensorrt")
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(folder, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60))
        edit_spec(spec, {"deploy.max_batch_size": 4, "export.target": "tensorrt"})
        return api.build(spec, out=folder / "out", emit=lambda e: None)


def test_a_tensorrt_package_carries_its_profile_libraries_and_engine_cache(tensorrt_build: api.BuildResult) -> None:
    package = tensorrt_build.package_dir
    verify = tensorrt_build.stage("verify").summary
    assert verify["measured_with"] == "CPUExecutionProvider" and verify["measured_on_target"] is False
    config = json.loads((package / "model" / "tensorrt.json").read_text())
    assert config["max_input_tokens"] == 64  # student.max_seq_len
    past = [name for name in _onnx_inputs(package) if name.startswith("past.")]
    assert past and all(f"{name}:" in config["profile"]["max"] for name in past)
    # Batch 1..max_batch_size, prompts 1..64 tokens, cache 0..64 + max_new_tokens positions.
    assert "input_ids:1x1," in config["profile"]["min"] and "input_ids:4x64," in config["profile"]["max"]
    assert f"{past[0]}:1x" in config["profile"]["min"] and "x0x" in config["profile"]["min"].split(past[0])[1]
    assert "attention_mask:4x136" in config["profile"]["max"]
    assert "\nonnxruntime-gpu==" in (package / "requirements.txt").read_text()
    dockerfile = (package / "Dockerfile").read_text()
    assert f'"{TENSORRT_LIBS}"' in dockerfile
    assert "DISTILLC_TRT_CACHE=/var/cache/distillc-trt" in dockerfile and "VOLUME /var/cache/distillc-trt" in dockerfile
    assert "-v review-sentiment-trt:/var/cache/distillc-trt" in (package / "README.md").read_text()


def test_tensorrt_provider_options_come_from_the_package(
    tensorrt_build: api.BuildResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = tensorrt_build.package_dir / "model"
    assert providers.providers_for("tensorrt", model) == ["CPUExecutionProvider"]  # no GPU here
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: everything)
    monkeypatch.setenv("DISTILLC_TRT_CACHE", str(tmp_path / "engines"))
    chosen = providers.providers_for("tensorrt", model)
    assert [providers.provider_name(p) for p in chosen] == everything
    name, options = chosen[0]
    profile = json.loads((model / "tensorrt.json").read_text())["profile"]
    assert options["trt_engine_cache_enable"] and options["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert options["trt_profile_max_shapes"] == profile["max"] and options["trt_profile_opt_shapes"] == profile["opt"]
    assert providers.runs_on_target("tensorrt")


def test_inputs_longer_than_the_engines_cover_get_422(
    tensorrt_build: api.BuildResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OnTensorRT(generate.Generator):  # what a Generator on the TensorRT provider enforces
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.max_input_tokens = providers.max_input_tokens(self.model_dir)

    monkeypatch.setattr(generate, "Generator", OnTensorRT)  # what the server's load_model makes
    client = TestClient(server.create_app(tensorrt_build.package_dir))
    assert client.post("/v1/predict", json={"input": "the kettle was lovely"}).status_code == 200
    response = client.post("/v1/predict", json={"input": "the kettle was lovely " * 40})
    assert response.status_code == 422
    assert "over this package's limit of 64" in response.json()["detail"]


def test_a_gpu_package_on_a_machine_without_its_provider_says_so(
    tensorrt_build: api.BuildResult, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="distillc_runtime"):
        client = TestClient(server.create_app(tensorrt_build.package_dir))
    assert "package built for tensorrt is running on CPUExecutionProvider" in caplog.text
    health = client.get("/healthz").json()
    assert health["target"] == "tensorrt" and health["providers"] == ["CPUExecutionProvider"]


def _onnx_inputs(package: Path) -> list[str]:
    import onnx

    model = onnx.load(str(package / "model" / "model.onnx"), load_external_data=False)
    return [i.name for i in model.graph.input]
