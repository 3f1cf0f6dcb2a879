"""Which kind of student a model directory holds, loaded as the package serves it.

A decoder (generate.Generator: model.onnx with a key/value cache, tokenizer.json, generation.json) or a
linear classifier (linear.LinearClassifier: model.onnx over texts, classifier.json). Both answer
`prepare(text)` -> `answer_prompts([...])` for the server's worker, and `predict` / `predict_batch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from distillc_runtime.linear import LinearClassifier, is_linear
from distillc_runtime.providers import Provider

if TYPE_CHECKING:
    from distillc_runtime.generate import Generator


def load_model(
    model_dir: str | Path,
    providers: list[Provider] | None = None,
    threads: int = 0,
    max_input_tokens: int | None = None,
) -> Generator | LinearClassifier:
    if is_linear(model_dir):
        return LinearClassifier(model_dir, threads=threads)
    from distillc_runtime.generate import Generator

    return Generator(model_dir, providers=providers, threads=threads, max_input_tokens=max_input_tokens)
