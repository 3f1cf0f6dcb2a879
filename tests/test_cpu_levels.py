"""The shipped variants answer alike on every x86-64 level the package supports, tested below this machine's
own level with QEMU's user-mode emulator (Debian's qemu-user; `.ci/run` installs it):
- Haswell: AVX2 and FMA, no AVX-512, no VNNI (where full-range int8 x uint8 products saturate);
- Nehalem: SSE4.2 only.
And the package's self-test catches a variant that saturates there though it is exact where it was built."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distillc.student.quantize import quantize, write_prefill
from tests.conftest import review_texts
from tests.helpers import runtime
from tests.test_selftest import refresh_manifest, report
from tests.tiny import build_tiny_model
from tests.variants import answers, export_fp32

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None, reason="needs Debian's qemu-user (apt-get install qemu-user)"
)
LEVELS = ("Haswell", "Nehalem")
TEXTS = review_texts(24, seed=5)


def agreement(got: list[list[int]], reference: list[list[int]]) -> float:
    return sum(a == b for a, b in zip(got, reference, strict=True)) / len(reference)


@pytest.fixture(scope="module")
def variants(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("variants")
    fp32 = export_fp32(tiny_model, root / "fp32")
    for weights in ("int8", "int4"):
        quantize(fp32, root / weights, weights)
    return [fp32, root / "int8", root / "int4"]


@pytest.fixture(scope="module")
def native(variants: list[Path]) -> dict[str, list[list[int]]]:
    return answers(variants, TEXTS)


@pytest.mark.parametrize(("level", "seen"), [("Haswell", "avx2 (no vnni)"), ("Nehalem", "sse4.2 or below")])
def test_the_runtime_reports_the_emulated_cpu_not_the_hosts(level: str, seen: str) -> None:
    code = "from distillc_runtime import cpu; print(cpu.describe()['level'])"
    done = subprocess.run(["qemu-x86_64", "-cpu", level, sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == seen, done.stderr[-2000:]


@pytest.mark.parametrize("level", LEVELS)
def test_every_variant_answers_as_fp32_on_each_level(
    level: str, variants: list[Path], native: dict[str, list[list[int]]]
) -> None:
    emulated = answers(variants, TEXTS, level)
    one_input = 1 / len(TEXTS)
    for variant in native:
        here = agreement(emulated[variant], native["fp32"])
        built = agreement(native[variant], native["fp32"])
        # Within the self-test's tolerance of the agreement where the variant was verified (this machine).
        assert here >= built - max(0.05, one_input), (variant, level, here, built)
    assert emulated["fp32"] == native["fp32"]


def binarized_model(root: Path) -> Path:
    """A tiny model whose every weight matrix (but the embedding) is +-c: per-channel int8 quantization puts
    each weight at +-127, so a uint8 x full-range int8 product of two adjacent inputs overflows the 16-bit
    sums a CPU without VNNI makes (vpmaddubsw), on nearly every output."""
    import torch
    from transformers import AutoModelForCausalLM

    corpus = review_texts(400, seed=1) + ["positive", "negative"] * 20
    hf = build_tiny_model(root / "hf", corpus)
    model = AutoModelForCausalLM.from_pretrained(hf)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and "embed" not in name:
                weight.copy_(0.08 * torch.sign(weight))
    model.save_pretrained(hf)
    return hf


def full_range_prefill(int8: Path, fp32: Path, target: Path) -> Path:
    """The int8 variant with the prefill graph distillc once wrote: full-range (8-bit) int8 weights, exact
    with VNNI and saturating without it."""
    shutil.copytree(int8, target)
    write_prefill(fp32, target, weight_bits=8)
    return target


def package_of(base: Path, model: Path, fp32: Path, target: Path) -> Path:
    """`base` (a real package) carrying `model`, with the self-test its build would record on this machine."""
    from distillc_runtime.generate import Generator

    package = shutil.copytree(base, target)
    shutil.rmtree(package / "model")
    shutil.copytree(model, package / "model")
    texts = TEXTS[:16]
    shipped, reference = Generator(model), Generator(fp32)  # one input at a time, as verify answers
    cases = [{"input": t, "answer": shipped.predict(t), "reference": reference.predict(t)} for t in texts]
    recorded = json.loads((package / "selftest.json").read_text())
    recorded |= {
        "variant": model.name,
        "cases": cases,
        "agreement": sum(c["answer"] == c["reference"] for c in cases) / len(cases),
        "tolerance": max(0.05, 1 / len(cases)),
    }
    (package / "selftest.json").write_text(json.dumps(recorded))
    manifest = json.loads((package / "manifest.json").read_text())  # the swapped model's files, as a build lists them
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("model/")}
    manifest["files"] |= {f"model/{p.name}": "" for p in (package / "model").iterdir()}
    (package / "manifest.json").write_text(json.dumps(manifest))
    refresh_manifest(package)
    return package


def check_answers(package: Path, level: str = "native") -> subprocess.CompletedProcess:
    command = runtime(package, "check", str(package), "--answers")
    if level != "native":
        command = ["qemu-x86_64", "-cpu", level, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_the_self_test_catches_a_variant_that_saturates_below_the_build_machines_level(
    tiny_package: Path, tmp_path: Path
) -> None:
    hf = binarized_model(tmp_path)
    fp32 = export_fp32(hf, tmp_path / "fp32")
    quantize(fp32, tmp_path / "int8", "int8")
    saturating = full_range_prefill(tmp_path / "int8", fp32, tmp_path / "int8-full-range")

    # The products themselves: the 7-bit recipe answers under Haswell as here, the full-range one does not.
    native = answers([tmp_path / "int8", saturating], TEXTS)
    haswell = answers([tmp_path / "int8", saturating], TEXTS, "Haswell")
    assert haswell["int8"] == native["int8"]
    assert agreement(haswell["int8-full-range"], native["int8-full-range"]) < 0.5

    shipped = package_of(tiny_package, tmp_path / "int8", fp32, tmp_path / "shipped")
    broken = package_of(tiny_package, saturating, fp32, tmp_path / "broken")
    for package in (shipped, broken):
        done = check_answers(package)
        assert done.returncode == 0, done.stdout + done.stderr  # exact where it was built (or the test proves nothing)
    assert check_answers(shipped, "Haswell").returncode == 0
    done = check_answers(broken, "Haswell")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "self-test failed: the int8-full-range model agrees with the fp32 student on" in done.stderr
    assert "on this CPU, avx2 (no vnni) (x86_64: sse4_1 sse4_2 avx fma avx2)" in done.stderr
    summary = report(done.stdout)
    assert summary["agreement"] < summary["expected"] - summary["tolerance"] and summary["differing"]


LINEAR_PROBE = """
import json, sys
from distillc_runtime.linear import LinearClassifier
labels, probabilities = LinearClassifier(sys.argv[1]).probabilities(json.loads(sys.argv[2]))
print(json.dumps({"labels": labels, "probabilities": probabilities.tolist()}))
"""


@pytest.mark.parametrize("level", LEVELS)
def test_the_linear_student_answers_alike_on_each_level(level: str, tmp_path: Path) -> None:
    """Its graph's string ops and float products, emulated below this CPU: the same labels, probabilities
    within float32 rounding."""
    from distillc.student import linear
    from tests.conftest import sentiment

    texts = review_texts(80, seed=2)
    pipeline, _ = linear.fit(texts, [sentiment(t) for t in texts], "accuracy", seed=0)
    linear.write_model(pipeline, tmp_path / "model")
    probe = [*TEXTS, "Café was wonderful, 東京 too", ""]
    runs = {}
    for cpu in ("native", level):
        prefix = [] if cpu == "native" else ["qemu-x86_64", "-cpu", level]
        command = [*prefix, sys.executable, "-c", LINEAR_PROBE, str(tmp_path / "model"), json.dumps(probe)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[cpu] = json.loads(done.stdout)
    assert runs[level]["labels"] == runs["native"]["labels"] == linear.predict(pipeline, probe)[0]
    emulated, native = (np.array(runs[cpu]["probabilities"]) for cpu in (level, "native"))
    assert np.abs(emulated - native).max() < 1e-6
