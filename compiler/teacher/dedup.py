"""Exact and near-duplicate detection for texts: normalized hashing, then MinHash with LSH banding.

Near duplicates are pairs whose character 5-gram sets have a Jaccard similarity at or above a threshold.
MinHash signatures find candidate pairs in about linear time; each candidate is confirmed exactly.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import defaultdict

_WORDS = re.compile(r"\w+")
PERMUTATIONS = 64
BANDS = 16  # 16 bands of 4 rows: pairs above ~0.5 Jaccard almost always share a band
SHINGLE = 5
_MASK = (1 << 61) - 1


def normalize(text: str) -> str:
    """Case, punctuation and spacing do not make an input new."""
    return " ".join(_WORDS.findall(text.lower()))


def shingles(text: str) -> set[str]:
    norm = normalize(text)
    if len(norm) <= SHINGLE:
        return {norm}
    return {norm[i : i + SHINGLE] for i in range(len(norm) - SHINGLE + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _hash(shingle: str) -> int:
    return struct.unpack("<Q", hashlib.blake2b(shingle.encode(), digest_size=8).digest())[0] & _MASK


_SEEDS = [(2 * i + 1, 7919 * i + 13) for i in range(PERMUTATIONS)]


def signature(items: set[str]) -> tuple[int, ...]:
    hashes = [_hash(s) for s in items]
    return tuple(min((a * h + b) & _MASK for h in hashes) for a, b in _SEEDS)


class NearDuplicateIndex:
    """Add texts one by one; each is rejected when it duplicates, or nearly duplicates, one already kept."""

    def __init__(self, threshold: float = 0.6) -> None:
        self.threshold = threshold
        self.exact: set[str] = set()
        self.kept: list[set[str]] = []
        self.buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)

    def check(self, text: str) -> str:
        """ "" when `text` is new, else "duplicate" or "near-duplicate"."""
        norm = normalize(text)
        if norm in self.exact:
            return "duplicate"
        grams = shingles(text)
        bands = self._bands(signature(grams))
        seen: set[int] = set()
        for band in bands:
            for other in self.buckets.get(band, ()):
                if other not in seen and jaccard(grams, self.kept[other]) >= self.threshold:
                    return "near-duplicate"
                seen.add(other)
        return ""

    def add(self, text: str) -> None:
        grams = shingles(text)
        index = len(self.kept)
        self.kept.append(grams)
        self.exact.add(normalize(text))
        for band in self._bands(signature(grams)):
            self.buckets[band].append(index)

    @staticmethod
    def _bands(sig: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]]:
        rows = PERMUTATIONS // BANDS
        return [(b, sig[b * rows : (b + 1) * rows]) for b in range(BANDS)]


def distinct_ngram_ratio(texts: list[str], n: int) -> float:
    """Distinct word n-grams over all word n-grams (distinct-n): higher means more varied wording."""
    total, distinct = 0, set()
    for text in texts:
        words = normalize(text).split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        distinct.update(grams)
    return round(len(distinct) / total, 4) if total else 0.0
