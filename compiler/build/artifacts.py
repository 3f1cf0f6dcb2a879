"""Small helpers for the files stages read and write: JSON lines, JSON with a schema version, hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from distillc_runtime.integrity import sha256

SCHEMA_VERSION = 1


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines file one at a time: memory holds one row, whatever the file's size."""
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def write_json(path: Path, data: dict[str, Any], schema_version: int = SCHEMA_VERSION) -> None:
    """JSON artifact with `schema_version` first; written to a temp file then renamed (never half-written)."""
    try:  # no Infinity or NaN: they are not JSON, and readers of the artifact would fail on them
        text = json.dumps({"schema_version": schema_version, **data}, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"{path.name}: {error} (a figure was infinite or not a number)") from None
    write_text_atomic(path, text + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file, then rename over `path`: never half-written, and a failed write (a full
    disk) leaves no temp file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def file_sha256(path: Path) -> str:
    return sha256(path)  # the package's own check hashes the same way


def canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tree_files(root: Path, skip: Callable[[str], bool] | None = None) -> dict[str, str]:
    """sha256 of every file under `root`, by POSIX relative path; files whose path `skip` accepts are
    left out before they are read."""
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    return {name: file_sha256(path) for name, path in files.items() if not (skip and skip(name))}


LINKED_BYTES = 128 << 10  # files this large (weights, graphs, tokenizers) are linked; smaller ones are copied


def link_tree(source: Path, target: Path) -> None:
    """`source` copied to `target`, its large files as hard links, so a model's weights are stored once in a
    build folder. Small files (manifests, README, Dockerfile) are copied: editing one in place must not
    change the cached artifact. A linked file changed in place fails the cache's check
    (distillc.build.cache.damage) and is rebuilt. Files are copied where the filesystem has no hard links."""
    shutil.copytree(source, target, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    if os.path.getsize(source) >= LINKED_BYTES:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


def inodes(paths: Iterable[Path]) -> dict[tuple[int, int], list[int]]:
    """Each file under `paths` once per inode: [links found under paths, links it has, size]."""
    found: dict[tuple[int, int], list[int]] = {}
    for path in paths:
        for f in [path] if path.is_file() else path.rglob("*"):
            if f.is_file() and not f.is_symlink():
                info = f.stat()
                found.setdefault((info.st_dev, info.st_ino), [0, info.st_nlink, info.st_size])[0] += 1
    return found


def disk_bytes(paths: Iterable[Path]) -> int:
    """Bytes the files under `paths` take on disk, each file counted once however many links it has."""
    return sum(size for _, _, size in inodes(paths).values())
