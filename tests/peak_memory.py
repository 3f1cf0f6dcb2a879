"""Run a command and read its peak resident memory, not that of the process that started it.

On Linux a child's ru_maxrss starts from the high-water mark of the process that spawned it: exec keeps
the old address space's peak. A test process that has loaded models (a gigabyte, say) would therefore read a
gigabyte for any child it waits for. A small Python wrapper runs the command instead: what it reads for its
children (RUSAGE_CHILDREN) is theirs alone, over the command and whatever the command waited for."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)"
)


def run_with_peak(command: list[str], **popen: Any) -> tuple[subprocess.CompletedProcess[Any], float, float]:
    """(the finished process, seconds, peak RSS in MB) of `command`; `popen` as for subprocess.run."""
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak_kb"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _WRAPPER, str(peak_file), *command], check=False, **popen)
        seconds = time.perf_counter() - started
        peak_kb = int(peak_file.read_text()) if peak_file.exists() else 0
    return done, seconds, peak_kb / 1024
