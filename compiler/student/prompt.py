"""How the student sees a task: the prompt text around each input, and the training target.

The prompt is the model's own chat template rendered once around a placeholder; the text before
and after it ships with the model, so training and serving format inputs identically.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from distillc.task import label
from distillc_runtime.prompt import PLACEHOLDER, render

PROMPT_FILE = "prompt.json"


def prompt_template(tokenizer: Any, instructions: str) -> tuple[str, str]:
    """(prefix, suffix) so that prefix + input + suffix is the prompt the model answers."""
    messages = [{"role": "system", "content": instructions}, {"role": "user", "content": PLACEHOLDER}]
    return around_placeholder(tokenizer, messages) or (f"{instructions}\n\nInput: ", "\nOutput: ")


def few_shot_prompt(tokenizer: Any, task: Any, eos: list[int]) -> dict[str, Any]:
    """A prompt (as load_prompt gives) that shows the untrained model the task as the teacher sees it: the
    instructions, then each example as a user turn and its answer as the assistant's."""
    from distillc.task.prompts import label_messages

    messages = label_messages(task, PLACEHOLDER)
    shots = "".join(f"Input: {e.input}\nOutput: {e.output}\n\n" for e in task.examples)
    plain = (f"{messages[0]['content']}\n\n{shots}Input: ", "\nOutput: ")
    prefix, suffix = around_placeholder(tokenizer, messages) or plain
    return {"prompt_prefix": prefix, "prompt_suffix": suffix, "eos_token_ids": eos}


def around_placeholder(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, str] | None:
    """The model's chat template rendered around PLACEHOLDER, split there; the system message folded into the
    first user turn for templates without a system role; None without a template that takes either."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    system, first, *rest = messages
    folded = [{"role": "user", "content": f"{system['content']}\n\n{first['content']}"}, *rest]
    for shaped in (messages, folded):
        try:
            text = tokenizer.apply_chat_template(shaped, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - templates raise arbitrary errors for unsupported roles
            continue
        if isinstance(text, str) and text.count(PLACEHOLDER) == 1:
            prefix, suffix = text.split(PLACEHOLDER)
            return prefix, suffix
    return None


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """The tokens the student is trained to produce for `answer`: its own tokens, then end-of-sequence."""
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def label_sequences(tokenizer: Any, labels: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Each label with the tokens it is trained as: what label-constrained decoding chooses among."""
    return label.label_sequences(functools.partial(answer_ids, tokenizer), labels)


def eos_ids(tokenizer: Any, model_config: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def save_prompt(model_dir: Path, prefix: str, suffix: str, eos: list[int], max_seq_len: int) -> None:
    """The prompt around each input, the tokens that end an answer, and the row length the student was
    trained on (the package's input limit unless deploy.max_input_tokens sets one)."""
    prompt = {"prompt_prefix": prefix, "prompt_suffix": suffix, "eos_token_ids": eos, "max_seq_len": max_seq_len}
    (model_dir / PROMPT_FILE).write_text(json.dumps(prompt, indent=2), encoding="utf-8")


def input_limit(deploy_limit: int | None, prompt: dict[str, Any]) -> int:
    """The package's input limit (tokens of prompt and input): deploy.max_input_tokens, else the trained length."""
    return deploy_limit or int(prompt["max_seq_len"])


def load_prompt(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / PROMPT_FILE).read_text(encoding="utf-8"))


def prompt_text(prompt: dict[str, Any], text: str) -> str:
    return render(prompt["prompt_prefix"], prompt["prompt_suffix"], text)


def prompt_ids(tokenizer: Any, prompt: dict[str, Any], text: str) -> list[int]:
    """The prompt's tokens: prefix, input and suffix tokenized apart, the input always as plain text.

    A `<|im_end|>` (or any control token) typed into an input stays characters: only the chat template
    can open or close a turn, so a user cannot forge one. The package tokenizes the same way
    (distillc_runtime.generate.Generator.prompt_ids)."""

    def encode(piece: str, **options: Any) -> list[int]:
        return tokenizer(piece, add_special_tokens=False, **options)["input_ids"] if piece else []

    return encode(prompt["prompt_prefix"]) + encode(text, split_special_tokens=True) + encode(prompt["prompt_suffix"])
