"""The CPU the package reports: the instruction-set level onnxruntime's kernels run, read from the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillc_runtime.cpu import cpu_flags, isa_level

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
