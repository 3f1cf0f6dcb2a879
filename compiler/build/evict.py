"""Free the weights a finished build no longer needs: the trained fp32 weights, the pruned students and the
export variants that did not ship.

Every variant is measured and one ships: the package links its files, so it stands on its own. The trained
and pruned weights and the other variants are of no further use to it, and each is hundreds of MB (the fp32 weights
alone are 1.7x the int8 package on the default spec). Once the package is in place they are freed. Each
cache entry keeps its record (the digest that later stages were keyed by) and lists the freed files in its
`_meta.json` under "evicted": an unchanged build is still all hits, and a later build that needs those
files (verify, after a change to the latency budget) makes the entries again first, in order
(distillc.build.runner.remade_stages). What was paid for stays: the inputs, the teacher's labels, the
measurements. Training again is what a freed entry costs (about 100 s on the default spec, on 2 cores).
`distillc build --keep-weights` keeps everything (bench/decode.py measures every variant and PyTorch eager).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from distillc.build.artifacts import read_json, write_json
from distillc.build.cache import fsync_dir
from distillc.build.gc import freed_bytes
from distillc.build.runner import META


def evict(artifact: Path, folders: list[Path]) -> int:
    """Free every file under `folders` (inside the cached `artifact`); returns the bytes given back.

    The record is rewritten first: a kill before the files go leaves them listed as freed but present,
    which is harmless (they are ignored, and overwritten if the entry is made again)."""
    meta = read_json(artifact / META)
    prefixes = tuple(f"{folder.relative_to(artifact).as_posix()}/" for folder in folders)
    chosen = {name for name in meta["files"] if name.startswith(prefixes)}
    present = [artifact / name for name in sorted(chosen) if (artifact / name).exists()]
    if not present:
        return 0
    freed = freed_bytes(present)  # a file the package links to frees nothing
    meta["evicted"] = sorted(chosen | set(meta.get("evicted", ())))
    write_json(artifact / META, meta)
    fsync_dir(artifact)
    for path in present:
        path.unlink()
    # Folders emptied go too, deepest first, up to the artifact; one still holding something stays.
    emptied = {parent for path in present for parent in path.relative_to(artifact).parents if parent.parts}
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            (artifact / folder).rmdir()
    return freed
