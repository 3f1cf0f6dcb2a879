"""The package checks itself before it serves: every file in the package folder must be listed in the
manifest with its sha256, and nothing else may be there.

Refused, each named: a listed file changed by one byte or missing (files a container does not need, such
as Dockerfile and README.md, may be absent; the model, the runtime, package.json and selftest.json may
not); a file the manifest does not list, anywhere (a root-level `sitecustomize.py`, a `.pth`, an added
`k8s/secret.yaml`); bytecode (`__pycache__`, `.pyc`: never trusted, since Python runs a `.pyc` whose
header matches its source's mtime and size whatever its code); a symlink, even to an identical copy; a
FIFO, socket or device; a manifest that is not JSON or lists no files.
`python -I distillc_runtime/launch.py check PACKAGE_DIR` runs the same check by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

MANIFEST = "manifest.json"
REQUIRED = ("model/", "distillc_runtime/", "package.json", "selftest.json")
BYTECODE = "bytecode is never trusted: delete it (python -B or PYTHONDONTWRITEBYTECODE=1 writes none)"


def problems(package_dir: str | Path) -> list[str]:
    """What does not match the manifest, one line per file; empty when the package is intact."""
    root = Path(package_dir)
    listed, trouble = manifest_files(root)
    if trouble:
        return [trouble]
    found = []
    for name, digest in sorted(listed.items()):
        path = root / name
        if not path.is_file() or path.is_symlink():
            if name.startswith(REQUIRED) and not path.is_symlink():
                found.append(f"{name}: missing")
        else:
            try:
                if sha256(path) != digest:
                    found.append(f"{name}: sha256 differs from the manifest (changed after the build)")
            except OSError as error:
                found.append(f"{name}: cannot be read ({error.strerror})")
    found += unlisted(root, listed)
    return found


def manifest_files(root: Path) -> tuple[dict[str, str], str | None]:
    """The manifest's {relative path: sha256}, or the reason it cannot be used."""
    path = root / MANIFEST
    if path.is_symlink() or not path.is_file():
        return {}, f"{MANIFEST} is missing or not a regular file: the package cannot be checked"
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        return {}, f"{MANIFEST} is not a JSON object ({error}): the package cannot be checked"
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return {}, f'{MANIFEST} has no "files" object of path -> sha256: the package cannot be checked'
    outside = sorted(name for name in files if name.startswith("/") or ".." in name.split("/"))
    if outside:
        return {}, f"{MANIFEST} lists a path outside the package: {outside[0][:200]}"
    return files, None


def unlisted(root: Path, listed: dict[str, str]) -> list[str]:
    """Everything in the folder that is not a listed regular file: extra files, bytecode, symlinks, FIFOs."""
    found = []
    for folder, dirs, files in os.walk(root):  # does not follow symlinks: they are reported, not entered
        for entry in sorted(dirs + files):
            path = Path(folder, entry)
            name = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found.append(f"{name}: a symlink (a package holds only regular files)")
            elif entry == "__pycache__" or entry.endswith((".pyc", ".pyo")):
                found.append(f"{name}: {BYTECODE}")
                if entry in dirs:
                    dirs.remove(entry)  # one line for the folder, not one per file in it
            elif stat.S_ISDIR(mode):
                continue
            elif not stat.S_ISREG(mode):
                found.append(f"{name}: not a regular file (a FIFO, socket or device)")
            elif name not in listed and name != MANIFEST:
                found.append(f"{name}: not in the manifest (added after the build)")
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
