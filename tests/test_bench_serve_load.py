"""bench/serve_load.py runs against a tiny package: both modes at each concurrency, and an overload run
that the queue answers with prompt 429s while memory stays flat."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import review_texts

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_serve_load_measures_both_modes_and_the_overload(tiny_package: Path, tmp_path: Path) -> None:
    out, inputs = tmp_path / "load.json", tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"input": t}) + "\n" for t in review_texts(40)))  # within the tiny limit
    command = [sys.executable, str(ROOT / "bench" / "serve_load.py"), str(tiny_package), "--out", str(out)]
    command += ["--inputs", str(inputs)]
    command += ["--requests", "24", "--concurrency", "1,4", "--overload-s", "4", "--level-s", "30"]
    # A tiny model answers faster than its HTTP layer takes requests in, and twice what 4 clients measure
    # may not fill a queue of 64 on a fast CPU: a queue as short as the clients makes the overload fill it.
    command += ["--max-queue", "4"]  # no fewer than the closed-loop clients: they are never refused
    subprocess.run(command, check=True, timeout=600)
    result = json.loads(out.read_text())
    assert [(r["mode"], r["concurrency"]) for r in result["levels"]] == [
        ("micro-batching", 1), ("micro-batching", 4), ("no batching", 1), ("no batching", 4),
    ]  # fmt: skip
    assert all(r["ok"] == r["requests"] == 24 and r["requests_per_s"] > 0 for r in result["levels"])
    overload = result["overload"]
    assert overload["by_status"].get("429", 0) > 0 and overload["retry_after_on_every_429"]
    assert set(overload["by_status"]) <= {"200", "429"}  # no 5xx, no dropped connection
    assert overload["answered_max_ms"] <= overload["deadline_ms"]
    assert overload["rss_mb"]["end"] - overload["rss_mb"]["start"] < 50
