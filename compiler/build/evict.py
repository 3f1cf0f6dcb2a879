"""Free the export variants a finished build did not ship.

Every variant is measured and one ships: the package links its files. The others are of no further use
to the package, and each is hundreds of MB (the fp32 graph weighs as much as the trained weights). Once
the package is in place they are freed. The export stage's cache entry keeps its record (the digest that
later stages were keyed by) and lists the freed files in its `_meta.json` under "evicted": an unchanged
build is still all hits, and a later build that needs those files (verify, after a change to the latency
budget) makes the entry again first (distillc.build.runner.remade_stages). Re-exporting costs less than a
minute on the default spec; the trained weights, which cost a training run, are kept.
`distillc build --keep-variants` keeps every variant (bench/decode.py measures them all).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from distillc.build.artifacts import read_json, write_json
from distillc.build.cache import fsync_dir
from distillc.build.gc import freed_bytes
from distillc.build.runner import META


def evict(artifact: Path, folders: list[str]) -> int:
    """Free every file under `folders` (relative to the cached `artifact`); returns the bytes given back.

    The record is rewritten first: a kill before the files go leaves them listed as freed but present,
    which is harmless (they are ignored, and overwritten if the entry is made again)."""
    meta = read_json(artifact / META)
    chosen = {name for name in meta["files"] if any(name.startswith(folder.rstrip("/") + "/") for folder in folders)}
    present = [artifact / name for name in sorted(chosen) if (artifact / name).exists()]
    if not present:
        return 0
    freed = freed_bytes(present)  # a file the package links to frees nothing
    meta["evicted"] = sorted(chosen | set(meta.get("evicted", ())))
    write_json(artifact / META, meta)
    fsync_dir(artifact)
    for path in present:
        path.unlink()
    for folder in folders:
        with contextlib.suppress(OSError):  # emptied, it goes too; one still holding something stays
            (artifact / folder).rmdir()
    return freed
