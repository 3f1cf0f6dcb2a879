"""Texts with near duplicates planted at known places: for the deduplication tests and bench/scale.py."""

from __future__ import annotations

import random

_SYLLABLES = [a + b for a in ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "fu") for b in "nrstxmlkpz"]
VOCABULARY = [w + end for w in _SYLLABLES for end in ("", "a", "o", "e", "in")]  # 500 words


def sentence(rng: random.Random, shortest: int = 5, longest: int = 60) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(shortest, longest)))


def edited(rng: random.Random, text: str) -> str:
    """`text` with up to a quarter of its words replaced, dropped or added, recased and repunctuated: some
    edits leave it a near duplicate, the heaviest do not."""
    words = text.split()
    for _ in range(rng.randint(1, max(1, len(words) // 4))):
        op, at = rng.random(), rng.randrange(len(words))
        if op < 0.4:
            words[at] = rng.choice(VOCABULARY)
        elif op < 0.7 and len(words) > 3:
            del words[at]
        else:
            words.insert(at, rng.choice(VOCABULARY))
    return " ".join(words).capitalize() + rng.choice([".", "!", ""])


def planted(originals: int, copies: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """`originals` random sentences, then `copies` edited copies of some of them: the texts, and the
    (original, copy) row pairs planted."""
    rng = random.Random(seed)
    texts = [sentence(rng) for _ in range(originals)]
    pairs = []
    for _ in range(copies):
        source = rng.randrange(originals)
        pairs.append((source, len(texts)))
        texts.append(edited(rng, texts[source]))
    return texts, pairs
