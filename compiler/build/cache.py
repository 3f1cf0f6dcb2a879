"""The build cache's own safety: a hit is trusted only if its files are still what was committed, a
commit reaches the disk before it counts, and a folder is deleted only after it has left the cache.

- `damage` re-checks a cached artifact against its `_meta.json`: every recorded file must exist with
  the size and mtime it was committed with, or, where those changed, the same sha256 (files the record
  lists as freed after a build shipped excepted).
- `commit` fsyncs every file and folder of a finished artifact, renames it into place, and fsyncs the
  folder that holds it, so a power cut cannot leave a `_meta.json` whose files never reached the disk.
- `discard` renames a folder into the cache's `.trash` before deleting it: a kill halfway through
  deleting leaves debris in the trash, never a half-deleted artifact that looks like a hit.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from distillc.build.artifacts import file_sha256

TRASH = ".trash"


def file_stats(root: Path, files: dict[str, str]) -> dict[str, list[int]]:
    """[size, mtime_ns] of each committed file: the cheap check of a later hit."""
    stats = {}
    for name in files:
        info = (root / name).stat()
        stats[name] = [info.st_size, info.st_mtime_ns]
    return stats


def damage(folder: Path, meta: dict[str, Any]) -> str | None:
    """What no longer matches the artifact's record (the first file found), or None when it is intact."""
    stats = meta.get("stat", {})
    freed = set(meta.get("evicted", ()))  # freed on purpose after a build shipped (distillc.build.evict)
    for name, digest in meta.get("files", {}).items():
        if name in freed:
            continue
        path = folder / name
        try:
            info = path.stat()
        except OSError:
            return f"{name} is missing"
        if stats.get(name) == [info.st_size, info.st_mtime_ns]:
            continue
        if file_sha256(path) != digest:
            return f"{name} changed"
    return None


def fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with path.open("rb") as stream:
                os.fsync(stream.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open a folder (Windows): nothing to sync
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def commit(workdir: Path, final: Path) -> None:
    """Make `workdir` the artifact at `final`, durably; an artifact already there is discarded first."""
    fsync_tree(workdir)
    if final.exists():
        discard(final)
    os.replace(workdir, final)
    fsync_dir(final.parent)


def discard(folder: Path) -> None:
    """Take `folder` out of the cache at once (one rename), then delete it."""
    trash = folder.parent.parent / TRASH  # cache/<stage>/<key> -> cache/.trash
    trash.mkdir(parents=True, exist_ok=True)
    moved = trash / f"{folder.parent.name}-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
    os.replace(folder, moved)
    shutil.rmtree(moved, ignore_errors=True)
