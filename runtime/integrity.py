"""The package checks itself before it serves: every file the manifest lists must have its sha256.

A model file changed by one byte, a runtime file edited in place, or a file added beside the model all
stop the server at start, naming the file. `python -m distillc_runtime check PACKAGE_DIR` runs the same
check by hand. Files a container does not need (Dockerfile, README.md) may be absent; the model, the
runtime, package.json and the self-test's answers (selftest.json) may not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
REQUIRED = ("model/", "distillc_runtime/", "package.json", "selftest.json")
WATCHED = ("model", "distillc_runtime")  # folders where a file the manifest does not list is a problem


def problems(package_dir: str | Path) -> list[str]:
    """What does not match the manifest, one line per file; empty when the package is intact."""
    root = Path(package_dir)
    if not (root / MANIFEST).is_file():
        return [f"{MANIFEST} is missing: the package cannot be checked"]
    listed: dict[str, str] = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["files"]
    found = []
    for name, digest in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            if name.startswith(REQUIRED):
                found.append(f"{name}: missing")
        elif sha256(path) != digest:
            found.append(f"{name}: sha256 differs from the manifest (changed after the build)")
    for folder in WATCHED:
        for path in sorted((root / folder).rglob("*")):
            name = path.relative_to(root).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and name not in listed:
                found.append(f"{name}: not in the manifest (added after the build)")
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
