"""The CPU runtime's installed environment stays small: measured by installing the package's lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_the_cpu_runtime_installs_under_300_mb(tmp_path: Path) -> None:
    out = tmp_path / "footprint.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "footprint.py"), "--out", str(out)], check=True, timeout=900)
    result = json.loads(out.read_text())
    assert 50 < result["site_packages_mb"] < 300, result
    assert "onnxruntime" in result["largest_mb"] and "torch" not in result["largest_mb"]
