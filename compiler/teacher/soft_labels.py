"""The teacher's distribution over a label set, from what it journaled with an answer.

A local teacher journals every label's score (`label_logprobs`); the distribution is their softmax. An
endpoint journals each answer token with its top alternatives (`logprobs`); a label's probability is then
read where its text leaves the answer's: the chosen path's probability up to that token, times the
alternative that starts the label there. This is the rule constrained decoding follows (a label is
settled once no other is left: runtime/constrain.py), so labels whose first tokens differ are scored
from one position. Alternatives that only spell differently what every label still shares (`"` for
`": "`) say nothing about the label and are left out. A label no alternative leads to gets 0: it was not
among the endpoint's top alternatives.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from distillc.task.label import label_field, match_label


def label_distribution(labels: tuple[str, ...], entry: dict[str, Any]) -> dict[str, float] | None:
    """Each label's probability as the teacher saw it, or None when the entry holds no distribution."""
    if isinstance(entry.get("label_logprobs"), dict):
        return _softmax(labels, entry["label_logprobs"])
    if entry.get("logprobs"):
        return from_token_logprobs(labels, entry["text"], entry["logprobs"])
    return None


def _softmax(labels: tuple[str, ...], scores: dict[str, float]) -> dict[str, float] | None:
    if any(label not in scores for label in labels):
        return None
    top = max(scores[label] for label in labels)
    weights = {label: math.exp(scores[label] - top) for label in labels}
    total = sum(weights.values())
    return {label: w / total for label, w in weights.items()}


def from_token_logprobs(labels: tuple[str, ...], text: str, tokens: list[Any]) -> dict[str, float] | None:
    """The distribution over `labels` implied by an answer's tokens `[token, logprob, [[alt, logprob], ...]]`;
    None when the tokens do not spell the answer or the answer names no label."""
    answer = "".join(str(token) for token, _, _ in tokens)
    if answer.strip() != text.strip():
        return None
    renders = _renderings(labels, answer)
    if renders is None:
        return None
    chosen, render_of = renders
    mass = dict.fromkeys(labels, 0.0)
    alive = set(labels)
    path = 1.0  # probability of the answer's tokens so far
    prefix = ""
    for token, logprob, alternatives in tokens:
        follows = {label for label in alive if _agrees(render_of[label], prefix + token)}
        shared = len(os.path.commonprefix([render_of[label] for label in alive]))
        for alternative, alt_logprob in alternatives:
            if alternative == token or len(prefix + alternative) <= shared:
                continue  # the same token, or another spelling of what every label still shares
            leads_to = [label for label in alive if _agrees(render_of[label], prefix + alternative)]
            for label in leads_to:  # a token several labels start with: its mass is shared among them
                mass[label] += path * math.exp(alt_logprob) / len(leads_to)
        path *= math.exp(logprob)
        alive, prefix = follows, prefix + token
        if len(alive) <= 1:
            break
    if alive != {chosen}:
        return None
    mass[chosen] += path
    total = sum(mass.values())
    return {label: m / total for label, m in mass.items()} if total > 0 else None


def _renderings(labels: tuple[str, ...], answer: str) -> tuple[str, dict[str, str]] | None:
    """(the label the answer names, each label's answer written the same way), casefolded; None when the
    answer names no label or the label cannot be found in it."""
    field = label_field(answer.strip())
    chosen, _ = match_label(labels, field if field is not None else answer)
    if chosen is None:
        return None
    folded = answer.casefold()
    if field is not None:  # {"label": "..."}: each label as a JSON string in the same place
        written = json.dumps(field, ensure_ascii=False)
        start = folded.find(written.casefold())
        spell = lambda label: json.dumps(label, ensure_ascii=False)  # noqa: E731
    else:  # plain text: the label's words where the answer has them
        written = chosen
        start = folded.find(chosen.casefold())
        spell = lambda label: label  # noqa: E731
    if start < 0:
        return None
    head, tail = folded[:start], folded[start + len(written) :]
    return chosen, {label: head + spell(label).casefold() + tail for label in labels}


def _agrees(rendering: str, text: str) -> bool:
    """Whether an answer starting with `text` can still be `rendering`."""
    text = text.casefold()
    return rendering.startswith(text) or text.startswith(rendering)
