"""The key/value cache of one batch of requests, for the two graph layouts distillc exports.

- `SharedCache`, for the fused CPU graph (GroupQueryAttention; inputs input_ids, attention_mask and
  past_key_values.<i>.key/value): each row's cache is a buffer of fixed capacity that the graph writes
  into in place (its `present` outputs are bound to the same memory as its `past` inputs), and each row
  holds its own length, so no cache is copied per token. Prompts are prefilled one row at a time (the
  graph takes several new tokens after a cache at batch 1 only), then rows decode together.
- `GrowingCache`, for the portable graph (standard ONNX ops, inputs position_ids and past.<i>.key/value):
  prompts are left-padded into one batch and the graph returns the cache grown by each step's tokens.

Both start from a cached prompt prefix when every prompt begins with it, and return only the last
position's logits of each row.

A model may come as two graphs of the same weights with the same inputs and outputs (the int8 variant):
model.onnx for passes of one or two tokens, and prefill.onnx for longer ones. A pass of few tokens reads
every weight to do little arithmetic, so the fewest bytes per weight win (MatMulNBits); a prompt does
enough arithmetic per weight that int8 x int8 products win (MatMulInteger). Both write the same cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

ONNX_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


# Up to this many tokens in one pass (rows x new tokens), model.onnx runs it; beyond, prefill.onnx.
# Measured on the default student's int8 graphs (2 cores, AVX-512 VNNI), ms per pass, MatMulNBits vs
# MatMulInteger: 1 token 17.6 vs 20.1, 2 tokens 18.1 vs 20.2, 4 tokens 21.2 vs 20.4, 8 tokens 31.3 vs 23.5.
FEW_TOKENS = 2


class Layout:
    """What a session's inputs say about its cache: names, shapes and which kind of cache it takes."""

    def __init__(self, session: ort.InferenceSession, prefill: ort.InferenceSession | None = None) -> None:
        self.session = session
        self.prefill = prefill
        inputs = {i.name: i for i in session.get_inputs()}
        self.shared = "position_ids" not in inputs
        self.past = [i for i in session.get_inputs() if i.name.startswith("past")]
        # past_key_values.3.key / past.3.key  <->  present.3.key
        self.present = {i.name: "present." + i.name.split(".", 1)[1] for i in self.past}
        self.dtype = {i.name: ONNX_TO_NUMPY[i.type] for i in self.past}
        self.heads = {i.name: (i.shape[1], i.shape[3]) for i in self.past}
        self.output_names = [o.name for o in session.get_outputs()]
        self.vocab = session.get_outputs()[0].shape[-1]  # a number in the shared layout's graph

    def session_for(self, ids: np.ndarray) -> ort.InferenceSession:
        """The graph that runs a pass over `ids` (rows x new tokens) fastest."""
        return self.prefill if self.prefill is not None and ids.size > FEW_TOKENS else self.session

    def empty(self, n: int, capacity: int = 0) -> dict[str, np.ndarray]:
        return {
            name: np.zeros((n, heads, capacity, size), dtype=self.dtype[name])
            for name, (heads, size) in self.heads.items()
        }


class SharedCache:
    def __init__(self, layout: Layout, prefix: dict[str, np.ndarray], prefix_ids: list[int]) -> None:
        self.layout = layout
        self.prefix, self.prefix_ids = prefix, prefix_ids
        self.buffers: dict[str, np.ndarray] = {}
        self.lengths: list[int] = []
        self.bound: dict[ort.InferenceSession, CacheBinding] = {}  # the decoding passes' bindings, made once

    def start(self, prompts: list[list[int]], room: int) -> np.ndarray:
        """Prefill every prompt into a buffer with `room` free positions after it; last logits per row."""
        capacity = max(len(p) for p in prompts) + room
        rows, logits = [], []
        for prompt in prompts:
            buffers = self.layout.empty(1, capacity)
            cached = cached_length(prompt, self.prefix_ids)
            if cached:
                for name, value in self.prefix.items():
                    buffers[name][:, :, :cached] = value
            ids = np.asarray([prompt[cached:]], dtype=np.int64)
            logits.append(run_in_place(self.layout, ids, np.ones((1, len(prompt)), dtype=np.int64), buffers)[0])
            rows.append(buffers)
        self.buffers = rows[0] if len(rows) == 1 else {n: np.concatenate([r[n] for r in rows]) for n in rows[0]}
        self.lengths = [len(p) for p in prompts]
        return np.stack(logits)

    def advance(self, tokens: list[int]) -> np.ndarray:
        """Feed one token per row; the next logits per row."""
        self.lengths = [n + 1 for n in self.lengths]
        width = max(self.lengths)
        mask = (np.arange(width)[None] < np.asarray(self.lengths)[:, None]).astype(np.int64)
        ids = np.asarray(tokens, dtype=np.int64)[:, None]
        session = self.layout.session_for(ids)
        if session not in self.bound:
            self.bound[session] = CacheBinding(self.layout, session, self.buffers)
        return self.bound[session].run(ids, mask)


class GrowingCache:
    def __init__(self, layout: Layout, prefix: dict[str, np.ndarray], prefix_ids: list[int]) -> None:
        self.layout = layout
        self.prefix, self.prefix_ids = prefix, prefix_ids
        self.past: dict[str, np.ndarray] = {}
        self.mask = np.zeros((0, 0), dtype=np.int64)

    def start(self, prompts: list[list[int]], room: int) -> np.ndarray:
        n = len(prompts)
        cached = min(cached_length(p, self.prefix_ids) for p in prompts)
        if cached != len(self.prefix_ids):
            cached = 0
        rests = [p[cached:] for p in prompts]
        width = max(len(r) for r in rests)
        pad = 0
        ids = np.asarray([[pad] * (width - len(r)) + r for r in rests], dtype=np.int64)
        rest_mask = np.asarray([[0] * (width - len(r)) + [1] * len(r) for r in rests], dtype=np.int64)
        positions = cached + np.clip(rest_mask.cumsum(axis=1) - 1, 0, None)
        self.mask = np.concatenate([np.ones((n, cached), dtype=np.int64), rest_mask], axis=1)
        self.past = {k: np.repeat(v, n, axis=0) for k, v in self.prefix.items()} if cached else self.layout.empty(n)
        return self._run(ids, positions)

    def advance(self, tokens: list[int]) -> np.ndarray:
        n = self.mask.shape[0]
        positions = self.mask.sum(axis=1, keepdims=True)  # each row's next position: the tokens it has so far
        self.mask = np.concatenate([self.mask, np.ones((n, 1), dtype=np.int64)], axis=1)
        return self._run(np.asarray(tokens, dtype=np.int64)[:, None], positions)

    def _run(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": self.mask, "position_ids": positions, **self.past}
        names = self.layout.output_names
        results = dict(zip(names, self.layout.session_for(ids).run(names, feed), strict=True))
        self.past = {name: results[present] for name, present in self.layout.present.items()}
        return results["logits"][:, -1]


def cached_length(prompt: list[int], prefix_ids: list[int]) -> int:
    """How much of `prompt` the cached prefix covers: all of the prefix, or nothing. At least one token
    must be left to compute, since the answer starts from the last prompt position's logits."""
    n = len(prefix_ids)
    return n if n and len(prompt) > n and prompt[:n] == prefix_ids else 0


class CacheBinding:
    """One session bound to one set of cache buffers, read and written in place, and to a logits buffer.
    Binding the 4 x layers cache tensors takes about 1 ms, a tenth of a decoding step on the default
    student, so a batch's decoding steps bind them once and rebind only the step's ids and mask."""

    def __init__(self, layout: Layout, session: ort.InferenceSession, buffers: dict[str, np.ndarray]) -> None:
        self.session = session
        self.binding = session.io_binding()
        rows = next(iter(buffers.values())).shape[0]
        self.logits = np.empty((rows, 1, layout.vocab), dtype=np.float32)  # the last position's only
        logits = self.logits
        self.binding.bind_output("logits", "cpu", 0, logits.dtype, list(logits.shape), logits.ctypes.data)
        for name, buffer in buffers.items():
            for bind, target in ((self.binding.bind_input, name), (self.binding.bind_output, layout.present[name])):
                bind(target, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One pass over `ids` (rows x new tokens); each row's next-token logits (a copy: the buffer is reused)."""
        self.binding.bind_cpu_input("input_ids", ids)
        self.binding.bind_cpu_input("attention_mask", mask)
        self.session.run_with_iobinding(self.binding)
        return self.logits[:, -1].copy()


def run_in_place(layout: Layout, ids: np.ndarray, mask: np.ndarray, buffers: dict[str, np.ndarray]) -> np.ndarray:
    """One pass of the shared-buffer graph: the cache is read and written in `buffers` itself."""
    return CacheBinding(layout, layout.session_for(ids), buffers).run(ids, mask)


def prefill_prefix(layout: Layout, prefix_ids: list[int]) -> dict[str, np.ndarray]:
    """The cache of the prompt prefix alone, computed once when the model loads."""
    n = len(prefix_ids)
    ids = np.asarray([prefix_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    if layout.shared:
        buffers = layout.empty(1, n)
        run_in_place(layout, ids, mask, buffers)
        return buffers
    cache = GrowingCache(layout, {}, [])
    cache.mask = mask
    cache.past = layout.empty(1)
    cache._run(ids, np.arange(n, dtype=np.int64)[None])
    return cache.past
