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
    def __init__(self, model_dir: str | Path, providers: list[str] | None = None, threads: int = 0) -> None:
        files = ModelFiles(Path(model_dir))
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

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(render(self.prefix, self.suffix, text), add_special_tokens=False).ids

    def generate_ids(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> list[int]:
        """Greedy continuation of `prompt_ids`, without the eos token."""
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=ONNX_TO_NUMPY[i.type]) for i in self.past_inputs}
        ids = np.asarray([prompt_ids], dtype=np.int64)
        total = ids.shape[1]
        positions = np.arange(total, dtype=np.int64)[None, :]
        out: list[int] = []
        for _ in range(limit):
            feed = {
                "input_ids": ids,
                "attention_mask": np.ones((1, total), dtype=np.int64),
                "position_ids": positions,
                **past,
            }
            results = dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))
            token = int(np.argmax(results["logits"][0, -1]))
            if token in self.eos_ids:
                break
            out.append(token)
            past = {
                name.replace("present.", "past.", 1): value
                for name, value in results.items()
                if name.startswith("present.")
            }
            ids = np.asarray([[token]], dtype=np.int64)
            positions = np.asarray([[total]], dtype=np.int64)
            total += 1
        return out

    def predict(self, text: str, max_new_tokens: int | None = None) -> str:
        ids = self.generate_ids(self.prompt_ids(text), max_new_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
