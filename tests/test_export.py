"""ONNX export with a key/value cache: same logits and same greedy tokens as the PyTorch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distillc.student.onnx_export import export_onnx
from distillc.student.prompt import eos_ids, prompt_ids, prompt_template, save_prompt


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoConfig, AutoTokenizer

    out = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny_model, out / "model.onnx")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prefix, suffix = prompt_template(tokenizer, "Classify the sentiment of the review.")
    save_prompt(out, prefix, suffix, eos_ids(tokenizer, AutoConfig.from_pretrained(tiny_model)), 256)
    (out / "tokenizer.json").write_bytes((tiny_model / "tokenizer.json").read_bytes())
    generation = json.loads((out / "prompt.json").read_text())
    (out / "generation.json").write_text(json.dumps({**generation, "max_new_tokens": 12}))
    return out


def test_prompt_template_uses_the_chat_template(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    prefix, suffix = prompt_template(AutoTokenizer.from_pretrained(tiny_model), "Do it.")
    assert (prefix, suffix) == ("<|system|>Do it.</s><|user|>", "</s><|assistant|>")


def test_last_logits_match_pytorch_with_and_without_past(tiny_model: Path, exported: Path) -> None:
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    session = ort.InferenceSession(str(exported / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    ids = np.array([[5, 17, 42, 9, 33, 2, 11]], dtype=np.int64)
    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in session.get_inputs()[3:]}
    prefill = dict(
        zip(
            names,
            session.run(
                None,
                {
                    "input_ids": ids[:, :6],
                    "attention_mask": np.ones((1, 6), np.int64),
                    "position_ids": np.arange(6)[None],
                    **past,
                },
            ),
            strict=True,
        )
    )
    step_past = {n.replace("present.", "past."): v for n, v in prefill.items() if n.startswith("present.")}
    step = session.run(
        ["logits"],
        {
            "input_ids": ids[:, 6:],
            "attention_mask": np.ones((1, 7), np.int64),
            "position_ids": np.array([[6]]),
            **step_past,
        },
    )[0]
    with torch.no_grad():
        reference = model(torch.from_numpy(ids)).logits.numpy()
    assert prefill["logits"].shape[1] == 1  # the last position only: the rest of the head is never computed
    assert np.abs(prefill["logits"][:, -1] - reference[:, 5]).max() < 1e-4
    assert np.abs(step[:, -1] - reference[:, 6]).max() < 1e-4


def test_greedy_generation_matches_transformers(tiny_model: Path, exported: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillc_runtime.generate import Generator

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    generator = Generator(exported)
    for text in ("the kettle was lovely", "the app was useless and the room too", "price"):
        prompt = generator.prompt_ids(text)
        template = {"prompt_prefix": generator.prefix, "prompt_suffix": generator.suffix}
        assert prompt == prompt_ids(tokenizer, template, text)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=12,
                do_sample=False,
                eos_token_id=sorted(generator.eos_ids),
                pad_token_id=tokenizer.pad_token_id,
            )
        expected = [t for t in out[0, len(prompt) :].tolist() if t not in generator.eos_ids]
        assert generator.generate_ids(prompt) == expected
        assert len(generator.generate_ids(prompt, max_new_tokens=3)) <= 3


def test_export_failure_is_one_clear_error_with_the_log_kept(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from distillc.errors import DistillcError

    def broken_export(*args: object, **kwargs: object) -> None:
        print("[torch.onnx] Obtain model graph...")
        raise RuntimeError("Unsupported operator aten::mystery\nlong internal detail")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(DistillcError) as caught:
        export_onnx(tiny_model, tmp_path / "model.onnx", tmp_path / "logs" / "export.log")
    assert caught.value.code == "E311"
    assert caught.value.message == (
        "the portable export of the llama student (torch.onnx.export) failed: Unsupported operator aten::mystery"
    )
    assert "Obtain model graph" in (tmp_path / "logs" / "export.log").read_text()


def test_batched_generation_answers_each_prompt_as_if_alone(exported: Path) -> None:
    from distillc_runtime.generate import Generator

    generator = Generator(exported)
    texts = ["x", "the kettle was lovely", "the app was useless and the room too and the price too", "price", "a b"]
    prompts = [generator.prompt_ids(t) for t in texts]
    assert len({len(p) for p in prompts}) > 1  # different lengths: the batch is padded
    alone = [generator.generate_ids(p) for p in prompts]
    assert generator.generate_batch(prompts) == alone
    assert generator.predict_batch(texts) == [generator.predict(t) for t in texts]
