"""Which onnxruntime execution providers a package's target asks for, in order of preference.

`tensorrt` packages run the TensorRT provider with an engine cache (keep DISTILLC_TRT_CACHE on a volume
and engines are built once, not at every container start) and with the optimization profile the package
stage wrote to `model/tensorrt.json`: the range of batch sizes, prompt lengths and cache lengths one
engine must cover, so decoding never rebuilds it. Nodes TensorRT cannot take run on CUDA.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

TENSORRT = "TensorrtExecutionProvider"
TARGET_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": [TENSORRT, "CUDAExecutionProvider", "CPUExecutionProvider"],
}
TENSORRT_CONFIG = "tensorrt.json"
Provider = str | tuple[str, dict[str, Any]]


def providers_for(
    target: str, model_dir: str | Path | None = None, tensorrt_config: dict[str, Any] | None = None
) -> list[Provider]:
    """The target's providers that this onnxruntime build has (CPU is always last and always there).

    `tensorrt_config`: the profile to use, when `model_dir` has no tensorrt.json (yet).
    """
    names = available_for(target)
    return [(name, tensorrt_options(model_dir, tensorrt_config)) if name == TENSORRT else name for name in names]


def available_for(target: str) -> list[str]:
    """The names of the target's providers that this onnxruntime build has."""
    if target == "tensorrt":
        preload_tensorrt()
    import onnxruntime as ort  # here, not at the top: the compiler reads this module's tables without it

    available = set(ort.get_available_providers())
    names = [p for p in TARGET_PROVIDERS.get(target, ["CPUExecutionProvider"]) if p in available]
    return names or ["CPUExecutionProvider"]


def provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def runs_on_target(target: str) -> bool:
    """Whether this machine can run `target` as it will run when deployed."""
    return available_for(target)[0] == TARGET_PROVIDERS[target][0]


def tensorrt_options(model_dir: str | Path | None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Engine and timing caches in DISTILLC_TRT_CACHE (default: ~/.cache/distillc/trt, outside the package,
    which holds only the files its manifest lists), and the optimization profile: `config`'s, or that of
    the model's `tensorrt.json`."""
    root = Path(model_dir) if model_dir else Path.cwd()
    cache = os.environ.get("DISTILLC_TRT_CACHE") or str(Path.home() / ".cache" / "distillc" / "trt")
    options: dict[str, Any] = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
    }
    if config is None and (root / TENSORRT_CONFIG).exists():
        config = json.loads((root / TENSORRT_CONFIG).read_text(encoding="utf-8"))
    if config:
        options |= {f"trt_profile_{name}_shapes": shapes for name, shapes in config["profile"].items()}
    return options


def max_input_tokens(model_dir: str | Path) -> int | None:
    """The longest prompt the optimization profile covers; None when there is no profile (no limit)."""
    config = Path(model_dir) / TENSORRT_CONFIG
    if not config.exists():
        return None
    return int(json.loads(config.read_text(encoding="utf-8"))["max_input_tokens"])


def preload_tensorrt() -> None:
    """Load TensorRT's libraries from the `tensorrt_libs` wheel (tensorrt-cu12-libs), if installed, so
    onnxruntime finds them without LD_LIBRARY_PATH; a system install needs nothing."""
    try:
        import tensorrt_libs  # type: ignore[import-not-found]
    except ImportError:
        return
    for library in sorted(Path(tensorrt_libs.__path__[0]).glob("libnvinfer*.so*")):
        try:
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue  # a plugin whose own dependencies are missing: onnxruntime reports what it needs
