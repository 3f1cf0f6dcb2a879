"""bench/decode.py end to end on a tiny build: every engine it can run here, one table, one JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distillc import api
from distillc_runtime import cpu
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher

BENCH = Path(__file__).parent.parent / "bench" / "decode.py"


@pytest.mark.slow
def test_bench_decode_measures_torch_every_variant_and_the_server(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60))
        edit_spec(spec, {"export.quantization": ["fp32", "int8"]})
        build = api.build(spec, out=tmp_path / "out", emit=lambda e: None, keep_weights=True).build_dir
    command = [sys.executable, str(BENCH), str(build), "--inputs", "6", "--tokens", "32", "--repeats", "3", "--http"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| engine | decode tok/s | label p50 ms |" in done.stdout
    results = json.loads((build / "bench-decode.json").read_text())
    assert results["cpu"] == cpu.describe()  # kernels differ by CPU: the table says where it was measured
    assert f"CPU: {results['cpu']['level']} (" in done.stdout
    engines = {e["engine"]: e for e in results["engines"]}
    assert list(engines) == ["pytorch eager fp32", "package fp32", "package int8", "package over HTTP"]
    assert engines["package fp32"]["agreement"] == 1.0  # the export answers as the PyTorch student does
    for name, engine in engines.items():
        assert engine["outside_label_set"] == 0
        assert engine["label_p50_ms"] > 0 and (name == "package over HTTP" or engine["decode_tokens_per_s"] > 0)
    assert "skipped: llama.cpp (no --llama-cpp)" in done.stdout
    assert all(len(engines[n]["decode_rounds"]) == 3 for n in engines if n != "package over HTTP")
    ratios = results["round_ratios"]["package fp32 / pytorch eager fp32"]
    assert len(ratios) == 3 and all(r > 0 for r in ratios)
