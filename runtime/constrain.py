"""Decoding constraints: which tokens may come next, so an answer can only take the task's shape.

A `label` task decodes over a trie of its labels' token sequences (each as trained: the label's tokens,
then the end-of-sequence token). The answer is settled as soon as one label is left, so labels whose
first tokens differ are answered from the prompt's single prefill pass, and tokens that every remaining
label shares are taken without asking the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    labels: list[int] = field(default_factory=list)  # indexes of the labels below this node


class LabelTrie:
    """The labels' token sequences as a trie, built once per model and shared by every request."""

    def __init__(self, texts: list[str], sequences: list[list[int]]) -> None:
        if not texts or len(texts) != len(sequences):
            raise ValueError("a label set needs one token sequence per label")
        if len({tuple(s) for s in sequences}) != len(sequences):
            raise ValueError("two labels have the same token sequence")
        self.texts = list(texts)
        self.sequences = [list(s) for s in sequences]
        self.root = _Node()
        for index, sequence in enumerate(self.sequences):
            node = self.root
            node.labels.append(index)
            for token in sequence:
                node = node.children.setdefault(token, _Node())
                node.labels.append(index)

    def start(self) -> LabelState:
        return LabelState(self, self.root, [])


class LabelState:
    """One request's walk down the trie."""

    def __init__(self, trie: LabelTrie, node: _Node, taken: list[int]) -> None:
        self.trie = trie
        self.node = node
        self.taken = taken

    @property
    def done(self) -> bool:
        """One label is left: the answer is settled, whatever the model would say next."""
        return len(self.node.labels) == 1

    @property
    def label(self) -> int:
        if not self.done:
            raise ValueError("the answer is not settled yet")
        return self.node.labels[0]

    def allowed(self) -> np.ndarray:
        return np.fromiter(self.node.children, dtype=np.int64)

    def forced(self) -> list[int]:
        """Tokens every remaining label shares from here: they need no forward pass to choose."""
        tokens, node = [], self.node
        while len(node.children) == 1 and len(node.labels) > 1:
            token, node = next(iter(node.children.items()))
            tokens.append(token)
        return tokens

    def advance(self, token: int) -> None:
        if token not in self.node.children:
            raise ValueError(f"token {token} is not allowed here")
        self.node = self.node.children[token]
        self.taken.append(token)

    def choose(self, logits: np.ndarray) -> int:
        """The allowed token with the highest logit (greedy decoding restricted to the label set)."""
        allowed = self.allowed()
        return int(allowed[int(np.argmax(logits[allowed]))])

    def answer_ids(self) -> list[int]:
        """The settled label's tokens, without the end-of-sequence token (what unconstrained greedy
        decoding returns when it produces that label)."""
        return self.trie.sequences[self.label][:-1]


class JsonGrammar:
    """A JSON task's schema compiled for the model's tokenizer (llguidance), built once per model.

    Decoding can then only write JSON that the schema accepts, in compact form (no free whitespace: the
    student was trained on compact JSON, and free whitespace would let a long answer run out of tokens).
    """

    def __init__(self, tokenizer_json: str, schema: str, eos: int, vocab_size: int) -> None:
        import json

        import llguidance

        compact = {**json.loads(schema or "{}"), "x-guidance": {"whitespace_flexible": False}}
        self.tokenizer = llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos)
        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(compact))
        self.vocab_size = vocab_size

    def start(self) -> JsonState:
        return JsonState(self)


class JsonState:
    """One request's place in the grammar."""

    def __init__(self, grammar: JsonGrammar) -> None:
        import llguidance
        import llguidance.numpy

        self.matcher = llguidance.LLMatcher(grammar.tokenizer, grammar.grammar)
        self.mask = llguidance.numpy.allocate_token_bitmask(1, grammar.vocab_size)
        self.taken: list[int] = []

    @property
    def done(self) -> bool:
        """The answer is complete: the grammar allows nothing more (or the end-of-sequence was taken)."""
        return self.matcher.is_stopped()

    def choose(self, logits: np.ndarray) -> int:
        """The likeliest token the grammar allows next."""
        return int(self.masked(logits).argmax())

    def masked(self, logits: np.ndarray) -> np.ndarray:
        """A copy of `logits` with every token the grammar forbids next at -inf."""
        import llguidance.numpy

        llguidance.numpy.fill_next_token_bitmask(self.matcher, self.mask, 0)
        masked = np.array(logits, dtype=np.float32)[None]
        llguidance.numpy.apply_token_bitmask_inplace(masked, self.mask)
        return masked[0]

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise ValueError(f"token {token} is not allowed here: {self.matcher.get_error()}")
        self.taken.append(token)


def from_config(config: dict, tokenizer_json: Path) -> tuple[LabelTrie | None, JsonGrammar | None]:
    """The constraint generation.json names, as the task type wrote it: a trie over `labels`, a grammar for
    `json_schema` (ended by `answer_eos`), or neither (free text up to the token limit)."""
    labels = config.get("labels") or []
    trie = LabelTrie([x["text"] for x in labels], [x["ids"] for x in labels]) if labels else None
    grammar = None
    if "answer_eos" in config:
        text = tokenizer_json.read_text(encoding="utf-8")
        grammar = JsonGrammar(text, config.get("json_schema", ""), config["answer_eos"], config["vocab_size"])
    return trie, grammar
