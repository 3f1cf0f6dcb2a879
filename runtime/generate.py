"""Greedy decoding of an exported decoder with an explicit key/value cache, in numpy + onnxruntime.

The model's inputs are input_ids, attention_mask, position_ids and past.<i>.key/value; its
outputs are logits and present.<i>.key/value (the layout distillc's export stage writes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from distillc_runtime.prompt import render
from distillc_runtime.providers import Provider, max_input_tokens, provider_name

ONNX_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class ModelFiles:
    """What a model directory holds: model.onnx, tokenizer.json and generation.json."""

    root: Path

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def generation(self) -> Path:
        return self.root / "generation.json"


class Generator:
    def __init__(self, model_dir: str | Path, providers: list[Provider] | None = None, threads: int = 0) -> None:
        files = ModelFiles(Path(model_dir))
        self.model_dir = files.root
        config = json.loads(files.generation.read_text(encoding="utf-8"))
        self.prefix: str = config["prompt_prefix"]
        self.suffix: str = config["prompt_suffix"]
        self.eos_ids: set[int] = set(config["eos_token_ids"])
        self.max_new_tokens: int = config["max_new_tokens"]
        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(files.onnx), options, providers=providers or ["CPUExecutionProvider"])
        self.past_inputs = [i for i in self.session.get_inputs() if i.name.startswith("past.")]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # A TensorRT engine covers the prompt lengths of its optimization profile, and no longer ones.
        uses_tensorrt = any(provider_name(p) == "TensorrtExecutionProvider" for p in self.session.get_providers())
        self.max_input_tokens = max_input_tokens(files.root) if uses_tensorrt else None

    def too_long(self, text: str) -> str | None:
        """Why this input cannot be answered, when it is longer than the model's engines cover."""
        if self.max_input_tokens is None:
            return None
        n = len(self.prompt_ids(text))
        if n <= self.max_input_tokens:
            return None
        return f"input is {n} tokens with the prompt, over this package's limit of {self.max_input_tokens}"

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(render(self.prefix, self.suffix, text), add_special_tokens=False).ids

    def generate_ids(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> list[int]:
        """Greedy continuation of `prompt_ids`, without the eos token."""
        return self.generate_batch([prompt_ids], max_new_tokens)[0]

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int | None = None) -> list[list[int]]:
        """Greedy continuations of several prompts at once (left-padded), each as if run alone."""
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        n, width = len(prompts), max(len(p) for p in prompts)
        pad = min(self.eos_ids)
        ids = np.asarray([[pad] * (width - len(p)) + p for p in prompts], dtype=np.int64)
        mask = np.asarray([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=np.int64)
        positions = np.clip(mask.cumsum(axis=1) - 1, 0, None)
        past = {i.name: np.zeros((n, i.shape[1], 0, i.shape[3]), dtype=ONNX_TO_NUMPY[i.type]) for i in self.past_inputs}
        outputs: list[list[int]] = [[] for _ in prompts]
        done = [False] * n
        for _ in range(limit):
            feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past}
            results = dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))
            tokens = results["logits"][:, -1].argmax(axis=-1)
            for row, token in enumerate(tokens.tolist()):
                if done[row]:
                    continue
                if token in self.eos_ids:
                    done[row] = True
                else:
                    outputs[row].append(token)
            if all(done):
                break
            past = {
                name.replace("present.", "past.", 1): v for name, v in results.items() if name.startswith("present.")
            }
            ids = tokens.astype(np.int64)[:, None]
            positions = mask.sum(axis=1, keepdims=True)  # each row's next position: the tokens it has so far
            mask = np.concatenate([mask, np.ones((n, 1), dtype=np.int64)], axis=1)
        return outputs

    def predict(self, text: str, max_new_tokens: int | None = None) -> str:
        return self.predict_batch([text], max_new_tokens)[0]

    def predict_batch(self, texts: list[str], max_new_tokens: int | None = None) -> list[str]:
        outputs = self.generate_batch([self.prompt_ids(t) for t in texts], max_new_tokens)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
