"""One build at a time in a build folder.

A second `distillc build` into the same folder (two CI jobs, a terminal and an editor) would race the
first over the journal and the cache; it stops at once with the first one's pid instead. The lock is
an OS file lock, so a build that dies, even by kill -9, releases it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from distillc.errors import DistillcError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; builds there are not guarded
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def build_lock(build_dir: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / ".lock").open("a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            raise DistillcError(
                "E202",
                f"another build is running in {build_dir}" + (f" (pid {holder})" if holder else ""),
                help="wait for it to finish, or build into another folder with --out",
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def lock_holder(build_dir: Path) -> str | None:
    """The pid of the build running in `build_dir` ("" when it did not say), or None when none is; a
    look that takes no lock and creates nothing."""
    path = build_dir / ".lock"
    if fcntl is None or not path.exists():
        return None
    with path.open("r", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None
