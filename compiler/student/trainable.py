"""What of the base model is trained: depth pruning (fewer layers) and LoRA adapters (fewer weights)."""

from __future__ import annotations

from typing import Any

from distillc.errors import DistillcError
from distillc.spec.ir import LoraIR


def prune_layers(model: Any, keep: int) -> list[int]:
    """Keep `keep` evenly spaced decoder layers (first and last included); returns their original indices."""
    import torch

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise DistillcError("E320", f"student.prune needs a decoder with model.layers; {type(model).__name__} has none")
    total = len(layers)
    if keep >= total:
        raise DistillcError(
            "E320",
            f"student.prune.keep_layers is {keep}, but the model has only {total} layers",
            help=f"choose fewer than {total}, or remove prune",
        )
    kept = [0] if keep == 1 else sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})
    model.model.layers = torch.nn.ModuleList(layers[i] for i in kept)
    for new_index, layer in enumerate(model.model.layers):
        if hasattr(getattr(layer, "self_attn", None), "layer_idx"):
            layer.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the new stack
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in kept]
    return kept


def add_lora(model: Any, lora: LoraIR) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) or "all-linear",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module name the model does not have
        raise DistillcError("E321", f"cannot add LoRA adapters: {str(exc).splitlines()[0]}") from None
