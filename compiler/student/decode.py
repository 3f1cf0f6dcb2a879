"""Greedy decoding with the PyTorch student, step for step as the package decodes, under the constraint the
task type gives (distillc_runtime.constrain): over a label set, within a JSON schema, or free up to the limit.
The evaluate stage scores these answers; the prune stage trains smaller students on them."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from distillc.spec.ir import TaskIR
from distillc.student.prompt import answer_ids, prompt_ids
from distillc.task import task_type
from distillc.task.base import StudentTokens
from distillc_runtime.constrain import JsonState, LabelState, LabelTrie, from_config


class Decoder:
    """Greedy decoding of one task's answers with a PyTorch model, as the package decodes them: over the
    label set, within the JSON Schema, or free up to the token limit."""

    def __init__(self, task: TaskIR, tokenizer: Any, tokenizer_json: Path, vocab_size: int, limit: int) -> None:
        self.tokenizer, self.limit = tokenizer, limit
        tokens = StudentTokens(functools.partial(answer_ids, tokenizer), tokenizer.eos_token_id, vocab_size)
        self.labels, self.grammar = from_config(task_type(task).constraint(task, tokens), tokenizer_json)
        self.free_text = self.labels is None and self.grammar is None
        self._prefix: tuple[Any, list[int], Any] | None = None  # (model, prefix tokens, their cache)

    def reply(self, model: Any, prompt: dict[str, Any], text: str) -> tuple[list[int], str]:
        """(answer tokens, answer text) for `text` in `prompt` (as load_prompt gives it). The prompt's prefix
        is the same for every input: its key/value cache is computed once per model, as the package does."""
        prefix = len(prompt_ids(self.tokenizer, {**prompt, "prompt_suffix": ""}, ""))
        return self.answer(model, prompt_ids(self.tokenizer, prompt, text), prompt["eos_token_ids"], prefix)

    def answer(self, model: Any, ids: list[int], eos: list[int], prefix: int = 0) -> tuple[list[int], str]:
        """(answer tokens, answer text) for the prompt `ids`, whose first `prefix` tokens may come from a
        cache of them."""
        import torch

        with torch.inference_mode():
            # Free text goes through model.generate, from the whole prompt.
            cache = self._prefix_cache(model, ids[:prefix]) if prefix and not self.free_text else None
            prompt = torch.tensor([ids[prefix:] if cache is not None else ids])
            if self.labels is not None:
                state = classify(model, prompt, self.labels, cache)
                return state.answer_ids(), self.labels.texts[state.label]
            if self.grammar is not None:
                new = generate_json(model, prompt, self.grammar.start(), self.limit, set(eos), cache)
            else:
                out = model.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=self.limit,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new = [t for t in out[0, prompt.shape[1] :].tolist() if t not in eos]
        return new, self.tokenizer.decode(new, skip_special_tokens=True).strip()

    def _prefix_cache(self, model: Any, prefix: list[int]) -> Any:
        """A copy of the key/value cache of `prefix` under `model` (computed on first use): decoding grows it."""
        import torch

        if self._prefix is None or self._prefix[0] is not model or self._prefix[1] != prefix:
            self._prefix = (model, prefix, model(input_ids=torch.tensor([prefix]), use_cache=True).cache)
        return copy.deepcopy(self._prefix[2])


def classify(model: Any, prompt_ids: Any, labels: LabelTrie, cache: Any = None) -> LabelState:
    """Greedy decoding over the label set with the PyTorch model, step for step as the package does it;
    `cache` holds what comes before `prompt_ids` (the prompt's prefix), or None."""
    state = labels.start()
    ids = prompt_ids
    while not state.done:
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = state.choose(out.logits[0, -1].float().numpy())
        state.advance(token)
        ids, cache = ids.new_tensor([[token]]), out.cache
    return state


def generate_json(
    model: Any, prompt_ids: Any, state: JsonState, limit: int, eos_ids: set[int], cache: Any = None
) -> list[int]:
    """Greedy decoding within a JSON schema with the PyTorch model, step for step as the package does it;
    `cache` as classify takes it."""
    ids, out = prompt_ids, []
    for _ in range(limit):
        step = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = state.choose(step.logits[0, -1].float().numpy())
        if token in eos_ids:
            break
        out.append(token)
        state.advance(token)
        if state.done:
            break
        ids, cache = ids.new_tensor([[token]]), step.cache
    return out
