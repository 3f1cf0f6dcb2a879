"""A linear classifier over TF-IDF features: a `label` task's student that is not a language model.

model.onnx takes a batch of texts (shape [n, 1]) and returns each one's label and the probability of each
label (tokenizing, TF-IDF weighting and the linear layer are all in the graph). Two things happen before it,
here, because the graph's string ops cannot do them the way the build's scikit-learn model did: lower-casing
(onnxruntime's StringNormalizer needs a locale a slim image lacks) and splitting into words (its Tokenizer's
RE2 `\\w` is ASCII only, so "café" would lose its "é"). The build fits on `words(text)` too, so both sides
see the same words.

It answers `/v1/predict` like a decoder's package does; it has no tokens and generates nothing, so the
OpenAI-compatible chat endpoint is not served (the server says so with a 404).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from distillc_runtime.confidence import Answer

CLASSIFIER = "classifier.json"  # what marks a model directory as a linear classifier's, and its labels
WORD = re.compile(r"\w\w+")  # scikit-learn's default token pattern (two or more word characters), Unicode-aware


def words(text: str) -> str:
    """The text as the classifier reads it: lower-cased words of two or more characters, one space apart."""
    return " ".join(WORD.findall(text.lower()))


def is_linear(model_dir: str | Path) -> bool:
    return (Path(model_dir) / CLASSIFIER).exists()


class LinearClassifier:
    """Answers as the package's decoder does (predict, predict_batch, prepare, answer_prompts), from a
    scikit-learn pipeline converted to ONNX. Always on the CPU: a few sparse dot products per input."""

    generative = False

    def __init__(self, model_dir: str | Path, threads: int = 0, **_: Any) -> None:
        self.model_dir = Path(model_dir)
        config = json.loads((self.model_dir / CLASSIFIER).read_text(encoding="utf-8"))
        self.labels: list[str] = config["labels"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.max_new_tokens = 0

    def prepare(self, text: str) -> str:
        """What the worker runs on: the input's words."""
        return words(text)

    def length_problem(self, prepared: str) -> str | None:
        return None  # no context window: a body within the server's byte limit is answerable

    def probabilities(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """Each raw text's label and its probability for each of `self.labels`."""
        return self._run([words(t) for t in texts])

    def _run(self, prepared: list[str]) -> tuple[list[str], np.ndarray]:
        if not prepared:
            return [], np.zeros((0, len(self.labels)), dtype=np.float32)
        batch = np.array(prepared, dtype=object).reshape(-1, 1)
        labels, probabilities = self.session.run(None, {"input": batch})
        return [str(label) for label in labels], probabilities

    def answer_prompts(
        self, prepared: list[str], max_new_tokens: int | None = None, top_logprobs: int = 0
    ) -> list[Answer]:
        """Each input's label, with its probability over the label set as the confidence; no tokens."""
        labels, probabilities = self._run(prepared)
        answers = []
        for label, row in zip(labels, probabilities, strict=True):
            p = float(row[self.labels.index(label)])
            answers.append(Answer(text=label, confidence=p, logprobs=(math.log(p) if p > 0 else -math.inf,)))
        return answers

    def predict(self, text: str, max_new_tokens: int | None = None) -> str:
        return self.predict_batch([text])[0]

    def predict_batch(self, texts: list[str], max_new_tokens: int | None = None) -> list[str]:
        return self.probabilities(texts)[0]
