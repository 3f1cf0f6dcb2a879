"""Stable splits: an input's side of a split follows from its id and its near duplicates alone, so a re-run
splits the same way."""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

SHOWN = 5  # texts of the largest group in the report


def unit_hash(item_id: str) -> float:
    """A stable number in [0, 1) per input."""
    return int(hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def grouped_sides(rows: Iterable[tuple[str, str]], share: float, scratch: Path) -> tuple[Any, dict[str, Any]]:
    """Which of `rows` (id, text) are held out, as a boolean array in their order, and a report of the
    grouping: near duplicates are grouped, and a group takes the side of its first member's hash. Memory:
    about 24 bytes a row, with the texts on disk under `scratch`."""
    import numpy as np

    from distillc.data.dedup import TextStore, near_groups

    hashes = array("d")
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        store = TextStore(Path(folder), signed=True)

        def texts() -> Iterator[str]:
            for row_id, text in rows:
                hashes.append(unit_hash(row_id))
                yield text

        store.extend(texts())
        sigs, bands = store.arrays()
        group = near_groups(sigs, bands, store.text)
        own = np.frombuffer(hashes, dtype=np.float64) < share  # the side each row's own hash gives it
        held_out = own[group]
        sizes = np.bincount(group, minlength=len(group))
        largest = int(sizes.argmax()) if len(group) else 0
        grouping = {
            "groups": int((sizes > 1).sum()),
            "grouped_inputs": int(sizes[sizes > 1].sum()),
            "largest_group": int(sizes[largest]) if len(group) else 0,
            "largest_group_examples": [store.text(r)[:200] for r in np.flatnonzero(group == largest)[:SHOWN]]
            if len(group) and sizes[largest] > 1
            else [],
            # held-out inputs with a near-copy on the training side: split by each input's own hash, and now
            "leaked_by_own_hash": _leaked(own, group),
            "leaked": _leaked(held_out, group),
        }
        store.close()
    return held_out, grouping


def _leaked(held_out: Any, group: Any) -> int:
    """Held-out rows whose group has a row on the training side."""
    import numpy as np

    training = np.bincount(group, weights=~held_out, minlength=len(group))
    return int((held_out & (training[group] > 0)).sum())
