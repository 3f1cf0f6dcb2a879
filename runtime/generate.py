"""Greedy decoding of an exported decoder, in numpy + onnxruntime.

The graph takes input_ids, attention_mask and the key/value cache, and returns the last position's
logits and the grown cache (see kvcache.py for the two layouts distillc exports).

Two things make a request cheaper than a plain greedy loop:
- the prompt prefix (system message and instructions) is the same for every request: its key/value
  cache is computed once when the model loads and every prompt that starts with it skips it;
- a `label` task decodes over its label set (see constrain.py): the answer is usually settled by the
  prompt's prefill alone, and it can never fall outside the set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from distillc_runtime.confidence import Alternatives, Answer, pick, score
from distillc_runtime.constrain import LabelState
from distillc_runtime.constrain import from_config as constraint_from
from distillc_runtime.kvcache import GrowingCache, Layout, SharedCache, prefill_prefix
from distillc_runtime.providers import Provider, provider_name
from distillc_runtime.providers import max_input_tokens as profile_input_tokens


@dataclass(frozen=True)
class ModelFiles:
    """What a model directory holds: model.onnx, tokenizer.json and generation.json, and optionally
    prefill.onnx, the same model quantized for prompts (see kvcache.Layout)."""

    root: Path

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    @property
    def prefill(self) -> Path:
        return self.root / "prefill.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def generation(self) -> Path:
        return self.root / "generation.json"


@dataclass
class Steps:
    """What decoding one answer took: its tokens (without end-of-sequence) and, per decided step, the
    chosen token's log-probability and, when asked for, the likeliest alternatives (confidence.py)."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[Alternatives] = field(default_factory=list)

    def take(self, logprob: float, alternatives: Alternatives = ()) -> None:
        self.logprobs.append(logprob)
        self.top.append(alternatives)


class Generator:
    generative = True  # a language model: the package serves the OpenAI-compatible chat endpoint too

    def __init__(
        self,
        model_dir: str | Path,
        providers: list[Provider] | None = None,
        threads: int = 0,
        cache_prefix: bool = True,
        max_input_tokens: int | None = None,
    ) -> None:
        files = ModelFiles(Path(model_dir))
        self.model_dir = files.root
        config = json.loads(files.generation.read_text(encoding="utf-8"))
        self.prefix: str = config["prompt_prefix"]
        self.suffix: str = config["prompt_suffix"]
        self.eos_ids: set[int] = set(config["eos_token_ids"])
        self.max_new_tokens: int = config["max_new_tokens"]
        self.labels, self.json = constraint_from(config, files.tokenizer)
        # How an answer's confidence is scored (confidence.py): a label's probability over the label set;
        # for JSON and text the build's choice, which the package may set (package.json `confidence`).
        self.score: str = "sum" if self.labels is not None else config.get("confidence", "mean")
        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        # Inputs are encoded with control tokens as plain text: only the template opens and closes turns.
        self.text_tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self.text_tokenizer.encode_special_tokens = True
        self.template_ids = (self._encode(self.prefix), self._encode(self.suffix))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(files.onnx), options, providers=providers)
        prefill = None
        if files.prefill.exists():
            prefill = ort.InferenceSession(str(files.prefill), options, providers=providers)
        self.layout = Layout(self.session, prefill)
        # The package's prompt limit; a TensorRT engine also covers only the lengths of its optimization profile.
        uses_tensorrt = any(provider_name(p) == "TensorrtExecutionProvider" for p in self.session.get_providers())
        limits = [max_input_tokens, profile_input_tokens(files.root) if uses_tensorrt else None]
        self.max_input_tokens = min((n for n in limits if n), default=None)
        self.prefix_ids: list[int] = []
        self.prefix_cache: dict[str, np.ndarray] = {}
        if cache_prefix and self.template_ids[0]:
            self.prefix_ids = self.template_ids[0]
            self.prefix_cache = prefill_prefix(self.layout, self.prefix_ids)

    def length_problem(self, prompt_ids: list[int]) -> str | None:
        """Why a prompt cannot be answered, when it is longer than the package's limit."""
        n = len(prompt_ids)
        if self.max_input_tokens is None or n <= self.max_input_tokens:
            return None
        return f"input is {n} tokens with the prompt, over this package's limit of {self.max_input_tokens}"

    def prepare(self, text: str) -> list[int]:
        """What the server's worker runs on (as linear.LinearClassifier.prepare): the prompt's tokens."""
        return self.prompt_ids(text)

    def prompt_ids(self, text: str) -> list[int]:
        """Prefix, input and suffix tokenized apart, as training did (distillc.student.prompt.prompt_ids)."""
        prefix, suffix = self.template_ids
        return prefix + self._encode(text, self.text_tokenizer) + suffix

    def _encode(self, text: str, tokenizer: Tokenizer | None = None) -> list[int]:
        return (tokenizer or self.tokenizer).encode(text, add_special_tokens=False).ids if text else []

    # -- answers as the task defines them ---------------------------------------------------------

    def predict(self, text: str, max_new_tokens: int | None = None) -> str:
        return self.predict_batch([text], max_new_tokens)[0]

    def predict_batch(self, texts: list[str], max_new_tokens: int | None = None) -> list[str]:
        return [answer.text for answer in self.answer_prompts([self.prompt_ids(t) for t in texts], max_new_tokens)]

    def answer_prompts(
        self, prompts: list[list[int]], max_new_tokens: int | None = None, top_logprobs: int = 0
    ) -> list[Answer]:
        """Each prompt's answer, with its tokens, their log-probabilities and its confidence, from prompts
        tokenized by `prompt_ids`; `top_logprobs` alternatives per token when asked for."""
        answers: list[Answer] = [Answer("")] * len(prompts)
        for group in self.length_groups(prompts):
            decoded = self._answer([prompts[i] for i in group], max_new_tokens, top_logprobs)
            for i, answer in zip(group, decoded, strict=True):
                answers[i] = answer
        return answers

    def length_groups(self, prompts: list[list[int]]) -> list[list[int]]:
        """Which prompts run together. The portable graph left-pads a batch to its longest prompt, so one
        long prompt would make short ones pay for its length: there, prompts run in groups whose longest
        is at most twice the shortest. The fused graph prefills each row alone and attends over each
        row's own length: one group."""
        if self.layout.shared:
            return [list(range(len(prompts)))]
        groups: list[list[int]] = []
        for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i])):
            if groups and len(prompts[i]) <= 2 * len(prompts[groups[-1][0]]):
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _answer(self, prompts: list[list[int]], max_new_tokens: int | None, top: int) -> list[Answer]:
        if self.labels is not None:
            classified = self.classify_batch(prompts, top)
            texts = [self.labels.texts[state.label] for state, _ in classified]
            decoded = [steps for _, steps in classified]
            counts = [len(steps.logprobs) for steps in decoded]  # a label's tokens, its end-of-sequence too
        else:
            decoded = self.decode_batch(prompts, max_new_tokens, top=top)
            texts = [self.tokenizer.decode(steps.ids, skip_special_tokens=True).strip() for steps in decoded]
            counts = [len(steps.ids) for steps in decoded]
        return [
            Answer(
                text=text,
                tokens=count,
                confidence=score(steps.logprobs, self.score),
                token_ids=tuple(steps.ids),
                logprobs=tuple(steps.logprobs),
                top=tuple(steps.top) if top else (),
            )
            for text, steps, count in zip(texts, decoded, counts, strict=True)
        ]

    def answer_ids(self, prompt_ids: list[int]) -> list[int]:
        """The answer's tokens as the package produces them: label-constrained for label tasks."""
        if self.labels is not None:
            return self.classify_batch([prompt_ids])[0][0].answer_ids()
        return self.generate_ids(prompt_ids)

    # -- decoding -------------------------------------------------------------------------------

    def classify_batch(self, prompts: list[list[int]], top: int = 0) -> list[tuple[LabelState, Steps]]:
        """Greedy decoding restricted to the label set; stops as soon as every answer is settled. Each
        label token gets a log-probability among the tokens allowed at its step: 0 where only one was
        (shared by every remaining label, or after the label was settled)."""
        assert self.labels is not None
        states = [self.labels.start() for _ in prompts]
        steps = [Steps() for _ in prompts]
        forced = states[0].forced()  # tokens every label starts with: part of the prefill, not decoded
        for state, taken in zip(states, steps, strict=True):
            for token in forced:
                state.advance(token)
                taken.take(0.0, ((token, 0.0),) if top else ())
        cache = self._cache()
        logits = cache.start([p + forced for p in prompts], max(len(s) for s in self.labels.sequences) + 1)
        while True:
            tokens = []
            for row, state in enumerate(states):
                if not state.done:
                    allowed = state.allowed()
                    index, logprob, alternatives = pick(logits[row][allowed], top)
                    state.advance(int(allowed[index]))
                    steps[row].take(logprob, tuple((int(allowed[i]), lp) for i, lp in alternatives))
                tokens.append(state.taken[-1] if state.taken else min(self.eos_ids))
            if all(state.done for state in states):
                break
            logits = cache.advance(tokens)
        for state, taken in zip(states, steps, strict=True):
            sequence = self.labels.sequences[state.label]
            for token in sequence[len(taken.logprobs) :]:  # settled: the rest of the label is certain
                taken.take(0.0, ((token, 0.0),) if top else ())
            taken.ids = sequence[:-1]  # without its end-of-sequence token
        return list(zip(states, steps, strict=True))

    def generate_ids(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> list[int]:
        """Greedy continuation of `prompt_ids`, without the eos token."""
        return self.generate_batch([prompt_ids], max_new_tokens)[0]

    def generate_batch(
        self, prompts: list[list[int]], max_new_tokens: int | None = None, stop_at_eos: bool = True
    ) -> list[list[int]]:
        """Greedy continuations of several prompts at once, each as if run alone; a JSON task's answers
        follow its schema (a row ends when its JSON is complete).

        `stop_at_eos=False` decodes exactly `max_new_tokens` unconstrained tokens (to measure decode speed)."""
        return [steps.ids for steps in self.decode_batch(prompts, max_new_tokens, stop_at_eos)]

    def decode_batch(
        self, prompts: list[list[int]], max_new_tokens: int | None = None, stop_at_eos: bool = True, top: int = 0
    ) -> list[Steps]:
        """`generate_batch`, keeping each step's log-probability (under the JSON schema's mask, if any)."""
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        outputs = [Steps() for _ in prompts]
        if limit <= 0:
            return outputs
        states = [self.json.start() for _ in prompts] if self.json is not None and stop_at_eos else None
        done = [False] * len(prompts)
        cache = self._cache()
        logits = cache.start(prompts, limit)
        for step in range(limit):
            tokens = []
            for row in range(len(prompts)):
                if done[row]:
                    tokens.append(min(self.eos_ids))
                    continue
                token, logprob, alternatives = pick(states[row].masked(logits[row]) if states else logits[row], top)
                tokens.append(token)
                outputs[row].take(logprob, alternatives)
                if stop_at_eos and token in self.eos_ids:
                    done[row] = True
                    continue
                outputs[row].ids.append(token)
                if states:
                    states[row].advance(token)
                    done[row] = states[row].done
            if all(done) or step == limit - 1:
                break
            logits = cache.advance(tokens)
        return outputs

    def _cache(self) -> SharedCache | GrowingCache:
        kind = SharedCache if self.layout.shared else GrowingCache
        return kind(self.layout, self.prefix_cache, self.prefix_ids)
