"""How onnxruntime's integer kernels behave on each x86-64 level: every quantization recipe distillc could
ship, run on one product of random data, natively and under QEMU's user-mode emulator at lower levels.

    python bench/isa_kernels.py [--levels native,Haswell,Nehalem] [--out results.json]

Each recipe is a one-node graph of a (4 x K) activation times a (K x N) weight, quantized the way the
export stage would; its error is measured against the float64 product. Quantization's own error is the same on every
level; a kernel that saturates an intermediate sum shows up as a larger error on one level than on the
others.

QEMU (`qemu-x86_64 -cpu Haswell`: AVX2, FMA, no AVX-512, no VNNI; `-cpu Nehalem`: SSE4.2 only) runs the
same Python and onnxruntime with those CPU features. It emulates no AVX-512 at all, so the AVX-512 levels
are measured only where the machine has them (`native`). Emulation is slow: keep the sizes small.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from distillc_runtime import cpu

ROWS, K, N = 4, 576, 576  # one token block of the default student's attention projection


def activations(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (ROWS, K)).astype(np.float32)
    x[:, ::37] *= 8  # a few outlier channels, as a transformer's hidden states have
    return x


def weights(seed: int = 1):
    import numpy as np

    return np.random.default_rng(seed).normal(0, 0.05, (K, N)).astype(np.float32)


def float_graph(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [numpy_helper.from_array(weights(), "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def recipes(folder: Path) -> dict[str, Path]:
    """Each recipe's graph, written into `folder` (on the host: the quantizers need not run emulated)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    source = folder / "float.onnx"
    float_graph(source)
    out = {"float": source}
    dynamic = {
        "u8s8 (quantize_dynamic, full-range int8 weights)": dict(weight_type=QuantType.QInt8),
        "u8s8 reduce_range (7-bit weights)": dict(weight_type=QuantType.QInt8, reduce_range=True),
        "u8u8 (uint8 weights)": dict(weight_type=QuantType.QUInt8),
    }
    for index, (name, options) in enumerate(dynamic.items()):
        path = folder / f"dynamic{index}.onnx"
        quantize_dynamic(str(source), str(path), per_channel=True, op_types_to_quantize=["MatMul"], **options)
        out[name] = path
    for bits, block, level in ((8, 128, 4), (8, 128, 0), (4, 32, 4), (4, 32, 0)):
        compute = "int8 compute" if level == 4 else "float compute"
        path = folder / f"nbits{bits}-{level}.onnx"
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(source)), bits=bits, block_size=block, is_symmetric=True, accuracy_level=level
        )
        quantizer.process()
        onnx.save(quantizer.model.model, str(path))
        out[f"MatMulNBits {bits}-bit, blocks of {block}, {compute}"] = path
    return out


def measure(graphs: dict[str, str]) -> dict[str, list]:
    """Each graph's max error relative to the largest exact value, and a digest of its output bytes to see
    which levels compute bit for bit alike (runs in the emulated process)."""
    import hashlib

    import numpy as np
    import onnxruntime as ort

    x = activations()
    exact = x.astype(np.float64) @ weights().astype(np.float64)
    results = {}
    for name, path in graphs.items():
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        y = session.run(None, {"x": x})[0]
        error = float(np.abs(y.astype(np.float64) - exact).max() / np.abs(exact).max())
        results[name] = [error, hashlib.sha256(y.tobytes()).hexdigest()[:12]]
    return results


def run_level(level: str, graphs: dict[str, Path]) -> dict[str, list]:
    payload = json.dumps({name: str(path) for name, path in graphs.items() if name != "float"})
    command = [sys.executable, __file__, "--measure", payload]
    if level != "native":
        command = ["qemu-x86_64", "-cpu", level, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}  # type: ignore[dict-item]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="native,Haswell,Nehalem")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        graphs = recipes(Path(scratch))
        table = {level: run_level(level, graphs) for level in args.levels.split(",")}
    print(f"host CPU: {cpu.text()}")
    levels = list(table)
    print(f"max |error| / max |exact|, {ROWS}x{K}x{N} product; '=': bit for bit as on {levels[0]}")
    print(f"{'recipe':56}" + "".join(f"{level:>12}" for level in levels))
    for name in (n for n in graphs if n != "float"):
        first = table[levels[0]].get(name)
        cells = []
        for level in levels:
            got = table[level].get(name)
            if got is None:
                cells.append(f"{str(table[level].get('error', '-'))[:11]:>12}")
            else:
                cells.append(f"{got[0]:>10.2e} {'=' if first and got[1] == first[1] else ' '}")
        print(f"{name:56}" + "".join(cells))
    if args.out:
        args.out.write_text(json.dumps({"host_cpu": cpu.describe(), "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
