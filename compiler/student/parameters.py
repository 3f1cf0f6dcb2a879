"""How many weights a saved student holds: what the gate compares students of different kinds by."""

from __future__ import annotations

from pathlib import Path


def parameter_count(model_dir: Path) -> int:
    """The weights a saved student holds, read from its safetensors headers (a tied table counts once)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                count = 1
                for size in weights.get_slice(name).get_shape():
                    count *= size
                total += count
    return total
