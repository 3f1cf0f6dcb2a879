"""The TensorRT optimization profile of an exported decoder: the shapes one engine must cover.

Without one, TensorRT builds an engine for the shapes it first sees and rebuilds whenever a later
request falls outside them; while decoding, the cache grows by one position per token, so that would be
a rebuild per token. The profile spans batch 1..deploy.max_batch_size, prompts of 1..the package's input
limit tokens (deploy.max_input_tokens, by default the student's trained max_seq_len) and caches of
0..(prompt + deploy.max_new_tokens) positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillc.spec.ir import SpecIR
from distillc.student.onnx_export import generation_config
from distillc.student.prompt import input_limit

OPT_TOKENS = 64  # the shape TensorRT tunes kernels for: a short prompt, batch 1


def tensorrt_config(onnx_path: Path, spec: SpecIR) -> dict[str, Any] | None:
    """{"max_input_tokens": n, "profile": {"min", "opt", "max": shape strings}}, or None when the
    model's cache inputs do not have fixed head counts and sizes (no profile can be written)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = {
        i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
        for i in model.graph.input
    }
    if any(name.startswith("past.") and (dims[1] is None or dims[3] is None) for name, dims in inputs.items()):
        return None
    longest = input_limit(spec.deploy.max_input_tokens, generation_config(onnx_path.parent))  # the server's limit
    cache = longest + spec.deploy.max_new_tokens

    def shapes(batch: int, tokens: int, past: int) -> str:
        parts = []
        for name, dims in inputs.items():
            if name.startswith("past."):
                parts.append(f"{name}:{batch}x{dims[1]}x{past}x{dims[3]}")
            elif name == "attention_mask":
                parts.append(f"{name}:{batch}x{past + tokens}")
            else:  # input_ids, position_ids
                parts.append(f"{name}:{batch}x{tokens}")
        return ",".join(parts)

    return {
        "max_input_tokens": longest,
        "profile": {
            "min": shapes(1, 1, 0),
            "opt": shapes(1, min(OPT_TOKENS, longest), min(OPT_TOKENS, cache)),
            "max": shapes(spec.deploy.max_batch_size, longest, cache),
        },
    }
