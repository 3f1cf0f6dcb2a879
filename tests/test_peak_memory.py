"""The memory figures of tests and benches are the measured command's, whatever the measuring process holds."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.peak_memory import run_with_peak

ALLOCATE = "import sys; held = b'x' * int(sys.argv[1]); print(len(held))"


def test_a_childs_peak_is_its_own_not_its_parents() -> None:
    held = b"x" * 600 * 2**20  # this process's high-water mark is now over 600 MiB
    small, _, small_mb = run_with_peak([sys.executable, "-c", "pass"])
    large, _, large_mb = run_with_peak([sys.executable, "-c", ALLOCATE, str(300 * 2**20)], capture_output=True)
    assert small.returncode == 0 and large.returncode == 0 and int(large.stdout) == 300 * 2**20
    assert small_mb < 100, small_mb
    assert 300 < large_mb < 500, large_mb
    # What a plain wait4 reads for the same small child: the parent's peak, kept across exec.
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    _, _, usage = os.wait4(process.pid, 0)
    assert usage.ru_maxrss / 1024 > 600, "wait4 no longer inherits the parent's peak: the wrapper is not needed"
    del held


def test_a_failing_command_keeps_its_exit_code() -> None:
    done, seconds, _ = run_with_peak([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert done.returncode == 3 and seconds > 0
