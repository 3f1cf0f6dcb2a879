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
    """The dispatched flags this CPU reports, in DISPATCHED's order; empty where the kernel does not say
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
    """What a report says of this machine's CPU."""
    flags = cpu_flags()
    return {"machine": platform.machine(), "level": isa_level(flags), "flags": flags}


def text(described: dict[str, object] | None = None) -> str:
    """One line for a report: `avx2 (no vnni) (x86_64: sse4_2 avx fma avx2)`, of this CPU or of a recorded one."""
    described = described if described is not None else describe()
    flags = " ".join(described.get("flags") or []) or "flags unknown"  # type: ignore[arg-type]
    return f"{described.get('level', 'unknown')} ({described.get('machine') or '?'}: {flags})"
