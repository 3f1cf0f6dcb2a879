"""Stable splits: an input's side of a split follows from its id alone, so a re-run splits the same way."""

from __future__ import annotations

import hashlib


def unit_hash(item_id: str) -> float:
    """A stable number in [0, 1) per input."""
    return int(hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:15], 16) / 16**15
