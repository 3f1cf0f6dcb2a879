"""What of the model is trained: depth pruning (fewer layers) and LoRA adapters (fewer weights)."""

from __future__ import annotations

from typing import Any

from distillc.errors import DistillcError
from distillc.spec.ir import LoraIR


def decoder_layers(model: Any) -> Any:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise DistillcError("E320", f"student.prune needs a decoder with model.layers; {type(model).__name__} has none")
    return layers


def check_candidate(total: int, keep: int) -> None:
    if not 1 <= keep < total:
        raise DistillcError(
            "E320",
            f"student.prune.candidates lists {keep} layers, but the student has {total}",
            help=f"list layer counts from 1 to {total - 1}",
        )


def prune_layers(model: Any, kept: list[int]) -> None:
    """Keep the decoder layers at indexes `kept` (in order), drop the rest, and renumber what remains."""
    import torch

    layers = decoder_layers(model)
    model.model.layers = torch.nn.ModuleList(layers[i] for i in kept)
    for new_index, layer in enumerate(model.model.layers):
        if hasattr(getattr(layer, "self_attn", None), "layer_idx"):
            layer.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the new stack
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in kept]


def block_distances(model: Any, prompts: list[list[int]], drop: int) -> list[float]:
    """For each start l, the mean angular distance (arccos of cosine similarity, over pi) between the hidden
    state entering layer l and the one entering layer l + drop, at each prompt's last token: how much that
    block of `drop` layers changes what the model carries forward. The smallest is the cheapest to remove
    (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers", 2024)."""
    import math

    import torch

    total = len(decoder_layers(model))
    sums = [0.0] * (total - drop + 1)
    with torch.no_grad():
        for ids in prompts:
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states
            # hidden_states[l] enters layer l; the last one is after the final norm, so stop at total - 1's output.
            states = [h[0, -1].float() for h in hidden[:total]] + [hidden[total][0, -1].float()]
            for start in range(len(sums)):
                cos = torch.nn.functional.cosine_similarity(states[start], states[start + drop], dim=0)
                sums[start] += math.acos(max(-1.0, min(1.0, float(cos)))) / math.pi
    return [s / max(1, len(prompts)) for s in sums]


def layers_to_keep(model: Any, prompts: list[list[int]], keep: int) -> list[int]:
    """The `keep` layers left after removing the contiguous block whose removal changes the last-token hidden
    state least on `prompts`; the final layer always stays (it shapes what the head reads)."""
    total = len(decoder_layers(model))
    check_candidate(total, keep)
    drop = total - keep
    distances = block_distances(model, prompts, drop)[: total - drop]  # blocks that end before the last layer
    start = min(range(len(distances)), key=distances.__getitem__)
    return [i for i in range(total) if not start <= i < start + drop]


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
