"""Every decoder family users bring builds, exports, quantizes and serves, with parity at the logit level.

Each family is a tiny random model of its own config class, with SmolLM2's real tokenizer and the family's
chat template (tests/families.py), built end to end with the review spec and the fake teacher. Gemma 2 (the
sliding-window fix) and Gemma 3 (the portable graph of a tied model) run in the default suite; the rest are
`slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from distillc import api
from distillc.build.events import Event
from tests.conftest import review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.families import FAMILIES, build_family, logit_gap, smollm2_tokenizer
from tests.helpers import http, start

FUSED = {"llama", "qwen2", "qwen3", "phi3", "mistral", "granite", "gemma2"}  # onnxruntime-genai's builder takes them
QUICK = {"gemma2", "gemma3"}


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smollm2_tokenizer(tmp_path_factory.mktemp("smollm2-tokenizer"))


def build_with(
    family: str, tmp_path: Path, tokenizer_dir: Path, events: list[Event], quantization: list[str] | None = None
) -> api.BuildResult:
    """A build of the review spec into tmp_path/out with a tiny `family` student (tmp_path/student), its
    max_seq_len derived from the data; the trained weights kept."""
    student = build_family(family, tokenizer_dir, tmp_path / "student")
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path / "spec",
            base_url=teacher.base_url,
            student=str(student),
            inputs=review_texts(40),
            min_score=0,
            epochs=1,
            changes={"student.max_seq_len": None, "export.quantization": quantization or ["fp32"]},
        )
        return api.build(spec, out=tmp_path / "out", emit=events.append, keep_weights=True)


@pytest.mark.parametrize("family", [f if f in QUICK else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_a_family_trains_exports_quantizes_and_serves(family: str, tmp_path: Path, smollm2_tokenizer_dir: Path) -> None:
    events: list[Event] = []
    result = build_with(family, tmp_path, smollm2_tokenizer_dir, events, ["fp32", "int8", "int4"])
    student = tmp_path / "student"

    # The target's graph, or the portable one after a coded warning that names the family and the step.
    export = result.stage("export")
    assert export.summary["graph"] == ("fused" if family in FUSED else "portable")
    fallbacks = [e.message for e in events if e.kind == "warning" and e.stage == "export"]
    if family not in FUSED:
        model_type = json.loads((student / "config.json").read_text())["model_type"]
        assert fallbacks and fallbacks[0].startswith(f"E311: the fused export of the {model_type} student")
        assert fallbacks[0].endswith("; using the portable export")
    else:
        assert not fallbacks
    parity = [json.loads(line) for line in (export.artifact / "parity.jsonl").read_text().splitlines()]
    assert parity and all(row["same"] for row in parity)

    # Quantized variants are smaller than fp32, tied embeddings included.
    sizes = export.summary["variant_bytes"]
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"], sizes

    # Logits as PyTorch's over a held-out prompt and three decoding steps: fp32 to float precision, the
    # quantized variants closely (a variant reading the wrong table or head would not correlate at all).
    trained = result.stage("train").artifact / "model"
    prompt = json.loads((trained / "prompt.json").read_text())
    held_out = json.loads((result.stage("verify").artifact / "fp32.predictions.jsonl").read_text().split("\n")[0])
    text = prompt["prompt_prefix"] + held_out["input"] + prompt["prompt_suffix"]
    ids = AutoTokenizer.from_pretrained(trained)(text, add_special_tokens=False)["input_ids"]
    variants = export.artifact / "variants"
    gap, _, _ = logit_gap(trained, variants / "fp32", ids)
    assert gap < 1e-4
    for weights, least in (("int8", 0.99), ("int4", 0.9)):
        _, correlation, _ = logit_gap(trained, variants / weights, ids)
        assert correlation > least, (weights, correlation)

    serve_both_endpoints(result.package_dir)


def serve_both_endpoints(package: Path) -> None:
    server, port = start(package)
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = http("POST", f"{base}/v1/predict", {"input": "the room was quiet and the staff were kind"})
        assert status == 200 and body["output"] in {"positive", "negative"}
        chat = {"model": "review-sentiment", "messages": [{"role": "user", "content": "the kettle was broken"}]}
        status, body = http("POST", f"{base}/v1/chat/completions", chat)
        assert status == 200 and body["choices"][0]["message"]["content"] in {"positive", "negative"}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_fused_graph_that_does_not_run_falls_back_with_a_coded_warning(
    tmp_path: Path, smollm2_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gemma 2's graph as the builder writes it (a window-sized ring cache) fails on the runtime's cache: a
    warning with a code, the family and the step, then the portable graph ships."""
    from distillc.student import fused_export

    monkeypatch.setattr(fused_export, "plain_window_cache", lambda model: None)
    events: list[Event] = []
    result = build_with("gemma2", tmp_path, smollm2_tokenizer_dir, events)
    warnings = [e.message for e in events if e.kind == "warning" and e.stage == "export"]
    assert warnings == [
        next(w for w in warnings if w.startswith("E311: the fused ONNX graph of the gemma2 student does not run: "))
    ]
    assert "local_window_size" in warnings[0] and warnings[0].endswith("; using the portable export")
    assert result.stage("export").summary["graph"] == "portable"


def test_an_export_no_graph_can_take_is_a_coded_error_naming_the_family(
    tmp_path: Path, smollm2_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from distillc.errors import DistillcError

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator aten::made_up")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(DistillcError) as caught:
        build_with("olmo2", tmp_path, smollm2_tokenizer_dir, [])  # the builder does not take OLMo 2 either
    assert caught.value.code == "E311"
    assert caught.value.message == (
        "the portable export of the olmo2 student (torch.onnx.export) failed: unsupported operator aten::made_up"
    )
