"""Texts as deduplication and diversity see them: without case, punctuation or spacing (no numpy: `plan`
and `validate` read inputs through here)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_WORDS = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Case, punctuation and spacing do not make an input new."""
    return " ".join(_WORDS.findall(text.lower()))


def exact_key(text: str) -> bytes:
    """8 bytes per text instead of the text: what exact deduplication keeps in memory."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=8).digest()


def distinct_ngram_ratio(texts: Iterable[str], n: int) -> float:
    """Distinct word n-grams over all word n-grams (distinct-n): higher means more varied wording."""
    total, distinct = 0, set()
    for text in texts:
        words = normalize(text).split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        distinct.update(grams)
    return round(len(distinct) / total, 4) if total else 0.0
