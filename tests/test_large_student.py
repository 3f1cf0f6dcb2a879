"""A real-size student exports and quantizes within this machine's memory: Qwen2.5-1.5B's shape (random
weights) through the export stage's own steps, each in a fresh process, with its peak RSS measured
(bench/large_student.py). `slow`: about ten minutes and 15 GB of disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench" / "large_student.py"
MEMORY_GIB = 16.0  # well inside the 24 GiB these machines have, with room for the build around it


@pytest.mark.slow
def test_a_1_5b_student_exports_and_quantizes_within_memory_and_time(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "export", "--size", "1.5b", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    steps = [line for line in lines if "step" in line]
    assert [s["step"].split(" ")[0] for s in steps] == ["fused", "int8", "int4", "load"]
    for step in steps:
        assert "error" not in step, step
        assert 0 < step["peak_rss_gib"] < MEMORY_GIB, step
    sizes = lines[-1]["mb"]
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"] and sizes["fp32"] > 6000  # 1.5B parameters in fp32
