"""The CPU a package runs on, as onnxruntime's kernels see it: which instruction sets they dispatch on.

onnxruntime picks its integer and float kernels by these flags (MLAS), so the same model can compute
differently on two x86-64 machines: an int8 product that is exact with VNNI can saturate with AVX2 alone.
The build records the flags it verified on; the package's self-test reports the ones it runs on.
"""

from __future__ import annotations

import platform
from pathlib import Path

# The flags MLAS dispatches on (x86-64), lowest level first; arm64 names for aarch64 machines.
DISPATCHED = (
    "sse4_1",
    "sse4_2",
    "avx",
    "fma",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
    "bf16",
)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The dispatched flags the kernel lists for this CPU, in DISPATCHED's order; empty where it does not say
    (not Linux). Under QEMU's user-mode emulator this is the host's list, not the emulated CPU's."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            found.update(line.split(":", 1)[-1].split())
    return [flag for flag in DISPATCHED if flag in found]


# numpy detects at run time (cpuid, and whether the OS enables the registers) what this process can execute,
# as onnxruntime does before it picks a kernel. Under an emulator that is the emulated CPU, where
# /proc/cpuinfo still lists the host's flags.
NUMPY_NAMES = {
    "SSE41": "sse4_1",
    "SSE42": "sse4_2",
    "AVX": "avx",
    "FMA3": "fma",
    "AVX2": "avx2",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VL": "avx512vl",
    "AVX512VNNI": "avx512_vnni",
    "AVX512BF16": "avx512_bf16",
    "AVX512FP16": "avx512_fp16",
    "ASIMD": "asimd",
    "ASIMDDP": "asimddp",
    "SVE": "sve",
}
# Flags numpy does not detect, taken from /proc/cpuinfo when the process runs the level they extend.
EXTENDS = {"avx_vnni": "avx2", "amx_bf16": "avx512f", "amx_int8": "avx512f", "i8mm": "asimd", "bf16": "asimd"}


def process_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The dispatched flags this process can use: numpy's run-time detection where it has them, the kernel's
    list for the rest (and the kernel's alone where numpy does not say)."""
    listed = cpu_flags(cpuinfo)
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as detected  # type: ignore[attr-defined]
    except ImportError:
        return listed
    found = {name for key, name in NUMPY_NAMES.items() if detected.get(key)}
    found |= {flag for flag, base in EXTENDS.items() if flag in listed and base in found}
    return [flag for flag in DISPATCHED if flag in found]


def isa_level(flags: list[str]) -> str:
    """One name for the level whose integer kernels onnxruntime runs: what differs between CPUs."""
    has = set(flags)
    if "amx_int8" in has:
        return "amx"
    if "avx512_vnni" in has:
        return "avx512-vnni"
    if {"avx512f", "avx512bw"} <= has:
        return "avx512 (no vnni)"
    if "avx_vnni" in has:
        return "avx2-vnni"
    if "avx2" in has:
        return "avx2 (no vnni)"
    if "asimd" in has:
        return "arm64" + (" i8mm" if "i8mm" in has else " dotprod" if "asimddp" in has else "")
    return "sse4.2 or below" if has else "unknown"


def describe() -> dict[str, object]:
    """What a report says of this machine's CPU, as this process sees it."""
    flags = process_flags()
    return {"machine": platform.machine(), "level": isa_level(flags), "flags": flags}


def text(described: dict[str, object] | None = None) -> str:
    """One line for a report: `avx2 (no vnni) (x86_64: sse4_2 avx fma avx2)`, of this CPU or of a recorded one."""
    described = described if described is not None else describe()
    flags = " ".join(described.get("flags") or []) or "flags unknown"  # type: ignore[arg-type]
    return f"{described.get('level', 'unknown')} ({described.get('machine') or '?'}: {flags})"
