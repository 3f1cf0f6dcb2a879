"""The CPU the package reports: the instruction-set level onnxruntime's kernels run, read from the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillc_runtime.cpu import cpu_flags, isa_level, process_flags

X86 = "fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 popcnt"
CPUS = {
    "Nehalem": (X86, "sse4.2 or below"),
    "Haswell": (X86 + " avx fma avx2", "avx2 (no vnni)"),
    "Alder Lake": (X86 + " avx fma avx2 avx_vnni", "avx2-vnni"),
    "Skylake-SP": (X86 + " avx fma avx2 avx512f avx512bw avx512vl", "avx512 (no vnni)"),
    "Cascade Lake": (X86 + " avx fma avx2 avx512f avx512bw avx512vl avx512_vnni", "avx512-vnni"),
    "Sapphire Rapids": (X86 + " avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_int8", "amx"),
}


@pytest.mark.parametrize("name", CPUS)
def test_x86_levels(name: str, tmp_path: Path) -> None:
    flags, level = CPUS[name]
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    found = cpu_flags(info)
    assert isa_level(found) == level
    assert "popcnt" not in found and found == sorted(set(found), key=found.index)  # only dispatched flags, once


def test_arm64_and_unknown(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimddp sve i8mm bf16\n")
    assert isa_level(cpu_flags(info)) == "arm64 i8mm"
    assert cpu_flags(tmp_path / "absent") == [] and isa_level([]) == "unknown"


def test_the_process_sees_what_numpy_detects_plus_the_kernels_extra_flags(tmp_path: Path) -> None:
    """numpy's run-time detection decides what the process can run (an emulator's CPU, not the host's); flags
    numpy does not know (AMX, AVX-VNNI) come from the kernel's list, on top of the level they extend."""
    from numpy._core._multiarray_umath import __cpu_features__ as detected

    info = tmp_path / "cpuinfo"
    info.write_text(f"flags\t\t: {CPUS['Sapphire Rapids'][0]} avx_vnni avx512_fp16\n")
    flags = process_flags(info)
    assert ("avx2" in flags) == bool(detected["AVX2"]) and ("avx512f" in flags) == bool(detected["AVX512F"])
    assert ("amx_int8" in flags) == bool(detected["AVX512F"]) and ("avx_vnni" in flags) == bool(detected["AVX2"])
    assert ("avx512_fp16" in flags) == bool(detected["AVX512FP16"])  # numpy's word, not the file's
