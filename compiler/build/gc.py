"""Free what a build folder holds beyond its last build: stage artifacts no longer in use.

Each change to a spec leaves the old artifacts in `cache/` (so switching back costs nothing), and a
model weighs hundreds of MB in each of train, export and package. `distillc gc` keeps the artifacts
the last build used (its manifest), the journal (paid answers are never deleted) and `package/`, and
removes every other cache entry, including half-written ones left by a killed build, and the training
checkpoints a killed build left (a re-run would have resumed from them).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from distillc.build.artifacts import inodes, read_json
from distillc.build.cache import TRASH, discard
from distillc.build.lock import build_lock
from distillc.errors import DistillcError


@dataclass
class Collected:
    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    kept: int = 0


def collect(build_dir: Path, dry_run: bool = False) -> Collected:
    manifest = build_dir / "manifest.json"
    if not manifest.exists():
        raise DistillcError(
            "E203",
            f"no build in {build_dir} (no manifest.json): nothing to tell apart from garbage",
            help="run `distillc build` first; gc keeps what the last build used",
        )
    result = Collected()
    with build_lock(build_dir):  # never while a build writes the cache
        in_use = {(s["name"], s["key"][:24]) for s in read_json(manifest).get("stages", [])}
        cache = build_dir / "cache"
        for entry in sorted(cache.glob("*/*")) if cache.exists() else []:
            if (entry.parent.name, entry.name) in in_use:
                result.kept += 1
                continue
            result.removed.append(entry)
        # Counted before anything goes: a file also linked from outside what goes (package/) frees nothing.
        result.freed_bytes = freed_bytes(result.removed)
        for entry in result.removed if not dry_run else []:
            if entry.parent.name == TRASH:  # debris of an earlier delete: already out of the cache
                shutil.rmtree(entry)
            else:
                discard(entry)
        # Training checkpoints of a run that never finished (a finished one removes its own).
        for entry in sorted((build_dir / "checkpoints").glob("*")):
            result.freed_bytes += freed_bytes([entry])
            result.removed.append(entry)
            if not dry_run:
                shutil.rmtree(entry)
    return result


def freed_bytes(paths: list[Path]) -> int:
    """What deleting `paths` (folders or files) gives back: the size of each file all of whose hard links
    lie among them."""
    return sum(size for found, links, size in inodes(paths).values() if found >= links)
