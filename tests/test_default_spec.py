"""The README's main job: the embedded default spec, a real model as teacher and student, offline on the CPU."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from distillc.build.artifacts import disk_bytes
from tests.helpers import distillc, parity_rows, read_json, runtime, stage_artifact

SPEC = Path(__file__).parent.parent / "specs" / "review-sentiment.yaml"


@pytest.mark.slow
def test_default_spec_builds_and_serves(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.perf_counter()
    result = distillc("build", str(SPEC), "--out", str(out), "--log-format", "json", timeout=3000)
    build_seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(out / "report.json")
    assert report["status"] == "succeeded"
    assert report["label"]["labeled"] + report["label"]["rejected"] == report["inputs"]["kept"] == 124
    assert report["evaluation"]["score"] >= report["evaluation"]["min_score"]
    parity = parity_rows(out)
    assert len(parity) == report["evaluation"]["n"] and all(r["torch"] == r["onnx"] for r in parity)
    variants = {v["name"]: v for v in report["verify"]["variants"]}
    assert list(variants) == ["fp32", "int8", "int4"]
    shipped = variants[report["package"]["variant"]]
    assert shipped["drop"] <= 0.01 and shipped["score"] >= report["evaluation"]["min_score"]
    # The calibrated local teacher uses both labels; a student answering one label would fail macro-F1.
    assert min(report["label"]["distribution"].values()) >= 30

    # The package's weights are links to the export's: package/ adds nothing to the build folder. The
    # trained weights and the variants that did not ship are freed once the package is in place.
    package_bytes = disk_bytes([out / "package"])
    folder_bytes = disk_bytes([out])
    assert folder_bytes - disk_bytes([p for p in out.iterdir() if p.name != "package"]) < 0.01 * package_bytes
    assert not (stage_artifact(out, "train") / "model").exists()
    assert folder_bytes <= 1.5 * package_bytes
    assert report["folder"]["package_bytes"] == package_bytes
    print(f"\nbuild folder {folder_bytes / 1e6:.0f} MB, package {package_bytes / 1e6:.0f} MB")

    from distillc_runtime.generate import Generator

    generator = Generator(out / "package" / "model")
    assert generator.predict("Absolutely love it, works perfectly and arrived early.") in {"positive", "negative"}

    # The package's self-test passes here, and on a CPU with AVX2 but no AVX-512 or VNNI (emulated), where
    # the int8 recipe before 7-bit weights agreed with fp32 on 47% of these inputs.
    package = out / "package"
    check = runtime(package, "check", str(package), "--answers")
    levels = [[]] + ([["qemu-x86_64", "-cpu", "Haswell"]] if shutil.which("qemu-x86_64") else [])
    for level in levels:
        done = subprocess.run(level + check, capture_output=True, text=True)
        assert done.returncode == 0 and "self-test passed" in done.stdout, (level, done.stdout, done.stderr[-2000:])

    started = time.perf_counter()
    again = distillc("build", str(SPEC), "--out", str(out))
    noop_seconds = time.perf_counter() - started
    assert again.returncode == 0 and "nothing (all cached)" in again.stdout
    print(
        f"\ndefault spec: build {build_seconds:.1f}s, no-op rebuild {noop_seconds:.1f}s, "
        f"timings {report['timings_s']}, score {report['evaluation']['score']}"
    )
