"""Quantized variants of an exported fp32 graph, each kind chosen for what it makes fast on a CPU.

- int8: two graphs of int8 weights sharing one cache (see distillc_runtime.kvcache) and the tensors they hold
  alike (stored once, in model.onnx.data).
  - model.onnx, for decoding steps: MatMulNBits computed in int8 (accuracy_level 4): the fewest bytes
    to read per token (66 tokens/s vs 58 for the other graph, default student, 2 cores). Each weight
    takes the largest block up to 128 that divides its rows, so nothing is padded: at 8 bits a larger
    block's shared scale costs nothing measurable (greedy answers agree with fp32's as often) and reads
    fewer bytes. Default student, 2 cores, median of 8 rounds in one run, x llama.cpp q8_0: blocks of 32
    1.14x, 64 1.20x, 128 (rows of 576 padded to 640) 1.24x, 128 and 64 as they divide 1.29x.
  - prefill.onnx, for prompts: per-channel 7-bit weights with dynamically quantized uint8 activations
    (MatMulInteger), the fastest prefill measured (a label answer 14.7 ms p50 vs 39 ms for the
    MatMulNBits graph and 41 ms for fp32). 7 bits, not 8: without VNNI, onnxruntime multiplies uint8 by
    int8 with an instruction that sums two products into a saturating 16-bit integer (vpmaddubsw, on
    AVX2 and on AVX-512 without VNNI); 255 x 127 x 2 overflows it, 255 x 64 x 2 does not. Full-range
    weights answered half the default student's held-out inputs wrongly on an AVX2 CPU. Measured
    (bench/isa_kernels.py; default student, label p50 on AVX-512 VNNI, 2 cores): full-range int8
    22.8 ms, exact with VNNI only; 7-bit 23.2 ms, exact everywhere, 40/40 answers as fp32; uint8
    weights (u8u8) 30.0 ms, exact everywhere.
- int4: blockwise int4 weights (MatMulNBits, blocks of 32) computed in int8 (accuracy_level 4); the
  fewest bytes per token, so the fastest decoding, at some cost in quality.

Both also store the token embedding table in 8 bits (GatherBlockQuantized): only one row of it is read
per token, and in fp32 it is the largest tensor of a small model (113 of 540 MB for SmolLM2-135M).
Where the output head is tied to that table and reads it through a Transpose (the portable graph of a tied
model: Gemma, SmolLM3), the head gets its own quantized copy, so no fp32 table is left beside the 8-bit one
(tiny Gemma 3, 49,152-token vocabulary: int8 25.7 MB and int4 24.9 MB against fp32's 20.3 MB before).

Tensor by tensor: the fp32 graph is read without its weights, each weight is mapped from its file when its
node is rewritten, and what replaces it is appended to the variant's data file at once, so memory holds one
weight at a time, not the model (Qwen2.5-0.5B's shape: peak 8.96 GiB with whole-model quantizers).
Quantized variants are not expected to match fp32 token for token; the verify stage scores them as shipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np

BLOCK = 32  # int4 weights and 8-bit embedding rows
INT8_BLOCK = 128
PREFILL_BITS = 7  # prefill.onnx's weights: exact on CPUs without VNNI (see above); 8 saturates there
ALIGN = 64  # bytes: each tensor in a data file starts on a boundary that vector loads like


def quantize(source: Path, target: Path, variant: str) -> None:
    """Write `variant` ("int8" | "int4") of the fp32 model folder `source` into `target`."""
    target.mkdir(parents=True)
    for name in ("tokenizer.json", "generation.json"):
        shutil.copy2(source / name, target / name)
    fp32 = Weights(source / "model.onnx")
    with DataFile(target / "model.onnx.data") as data:
        shared = write_graph(fp32, target / "model.onnx", data, "nbits", 8 if variant == "int8" else 4)
    if variant == "int8":
        write_prefill(source, target, shared=shared)


def write_prefill(
    source: Path, target: Path, weight_bits: int = PREFILL_BITS, shared: dict[str, Any] | None = None
) -> None:
    """int8's prefill.onnx in `target` (beside its model.onnx) from the fp32 folder `source`: per-channel
    int8 weights of `weight_bits` (7: exact on CPUs without VNNI, see above; 8 saturates there). The
    tensors model.onnx holds alike (`shared`, by name; read from model.onnx when not given) are not stored
    again: prefill.onnx points at them in model.onnx.data."""
    import onnx

    for stale in target.glob("prefill.onnx*"):
        stale.unlink()
    if shared is None:
        decoding = onnx.load(str(target / "model.onnx"), load_external_data=False)
        shared = {i.name: i for i in decoding.graph.initializer}
    with DataFile(target / "prefill.onnx.data") as data:
        write_graph(Weights(source / "model.onnx"), target / "prefill.onnx", data, "integer", weight_bits, shared)


class Weights:
    """The fp32 graph without its weights, and each weight mapped from its data file when asked for."""

    def __init__(self, path: Path) -> None:
        import onnx

        self.folder = path.parent
        self.model = onnx.load(str(path), load_external_data=False)
        self.tensors = {i.name: i for i in self.model.graph.initializer}

    def array(self, name: str) -> np.ndarray:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
        from onnx.external_data_helper import ExternalDataInfo

        tensor = self.tensors[name]
        if tensor.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(tensor)
        info = ExternalDataInfo(tensor)
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        path = self.folder / info.location
        return np.memmap(path, dtype=dtype, mode="r", offset=int(info.offset or 0), shape=tuple(tensor.dims))

    def float_matrix(self, name: str) -> bool:
        tensor = self.tensors.get(name)
        return tensor is not None and tensor.data_type == 1 and len(tensor.dims) == 2  # 1: FLOAT


class DataFile:
    """One external data file, written as tensors are made; each comes back as a TensorProto that points
    at its bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None

    def __enter__(self) -> DataFile:
        self.file = self.path.open("wb")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.file is not None
        self.file.close()

    def add(self, array: np.ndarray, name: str) -> Any:
        import numpy as np
        from onnx import TensorProto, helper

        assert self.file is not None
        offset = -(-self.file.tell() // ALIGN) * ALIGN
        self.file.write(b"\0" * (offset - self.file.tell()))
        contiguous = np.ascontiguousarray(array)
        self.file.write(contiguous.data)  # the array's own buffer (a mapped weight's pages): no bytes copy
        tensor = TensorProto()
        tensor.name = name
        tensor.dims.extend(contiguous.shape)
        tensor.data_type = helper.np_dtype_to_tensor_dtype(contiguous.dtype)
        for key, value in (("location", self.path.name), ("offset", offset), ("length", contiguous.nbytes)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        tensor.data_location = TensorProto.EXTERNAL
        return tensor


def write_graph(
    fp32: Weights, path: Path, data: DataFile, kind: str, bits: int, shared: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write `fp32`'s graph to `path` with each weight MatMul quantized (`kind` "nbits": MatMulNBits of
    `bits`; "integer": MatMulInteger over per-channel weights of `bits`) and each embedding Gather over
    8-bit rows. A tensor found in `shared` (by name) is pointed at, not stored. Returns the graph's
    tensors by name."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(fp32.model)
    graph = model.graph
    del graph.initializer[:]
    # A head tied to the embedding table reads it through a Transpose: it is quantized from the table.
    transposed = {
        n.output[0]: n.input[0]
        for n in fp32.model.graph.node
        if n.op_type == "Transpose"
        and fp32.float_matrix(n.input[0])
        and all(list(a.ints) == [1, 0] for a in n.attribute if a.name == "perm")
    }
    written: dict[str, Any] = {}

    def store(array: np.ndarray, name: str) -> str:
        if shared and name in shared:
            written[name] = shared[name]
        elif name not in written:
            written[name] = data.add(array, name)
        return name

    def weight(name: str) -> np.ndarray | None:
        if fp32.float_matrix(name):
            return fp32.array(name)
        return fp32.array(transposed[name]).T if name in transposed else None

    nodes = []
    quantized_inputs: dict[str, list[str]] = {}  # activations already quantized for MatMulInteger
    for node in fp32.model.graph.node:
        matrix = weight(node.input[1]) if node.op_type == "MatMul" else None
        table = weight(node.input[0]) if node.op_type == "Gather" else None
        if matrix is not None and kind == "nbits":
            nodes.append(nbits_node(node, matrix, bits, store))
        elif matrix is not None:
            nodes.extend(integer_nodes(node, matrix, bits, store, quantized_inputs))
        elif table is not None and table.shape[1] % BLOCK == 0:
            nodes.append(gather_node(node, table, store))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    read = {i for n in graph.node for i in n.input}
    for node in [n for n in graph.node if n.op_type == "Transpose" and n.output[0] not in read]:
        graph.node.remove(node)
    read = {i for n in graph.node for i in n.input}
    for name, tensor in fp32.tensors.items():  # the rest, as they were: norms, rotary caches, constants
        if name in read and name not in written:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                store(fp32.array(name), name)
            else:
                written[name] = tensor
    graph.initializer.extend(written[name] for name in written if name in read)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for stale in path.parent.glob(path.name):
        stale.unlink()
    onnx.save(model, str(path))
    return written


def nbits_node(node: Any, matrix: np.ndarray, bits: int, store: Any) -> Any:
    """MatMulNBits over `matrix` (K x N), symmetric blocks along K: for 8 bits the largest block up to
    INT8_BLOCK that divides K, for 4 bits BLOCK; computed in int8 (accuracy_level 4)."""
    import numpy as np
    from onnx import helper
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    rows, cols = matrix.shape
    block = int8_block(rows) if bits == 8 else BLOCK
    blocks = -(-rows // block)
    padded = np.zeros((blocks * block, cols), dtype=np.float32)
    padded[:rows] = matrix
    packed = np.zeros((cols, blocks, block * bits // 8), dtype=np.uint8)
    scales = np.zeros((cols, blocks), dtype=np.float32)
    zero_points = np.zeros((cols, -(-blocks * bits // 8)), dtype=np.uint8)
    kernel = quantize_matmul_8bits if bits == 8 else quantize_matmul_4bits
    kernel(packed, padded, scales, zero_points, block, cols, rows, True)
    base = node.input[1]
    return helper.make_node(
        "MatMulNBits",
        [node.input[0], store(packed, f"{base}_Q{bits}"), store(scales, f"{base}_scales")],
        list(node.output),
        name=node.name + f"_Q{bits}",
        domain="com.microsoft",
        K=rows,
        N=cols,
        bits=bits,
        block_size=block,
        accuracy_level=4,
    )


def integer_nodes(node: Any, matrix: np.ndarray, bits: int, store: Any, quantized: dict[str, list[str]]) -> list[Any]:
    """The MatMul as onnxruntime's dynamic quantization writes it (a pattern its optimizer fuses into one
    kernel): the activations quantized to uint8 per pass (once per tensor, however many MatMuls read it),
    weights per output channel, symmetric in `bits`, products summed in int32 and scaled back."""
    import numpy as np
    from onnx import TensorProto, helper

    top = 2 ** (bits - 1) - (1 if bits == 8 else 0)  # 7 bits: +-64; 8 bits: +-127
    scale = np.abs(matrix).max(axis=0).astype(np.float32) / top
    scale[scale == 0] = 1.0
    weights = np.clip(np.round(matrix / scale), -top, top).astype(np.int8)
    base, source, out = node.input[1], node.input[0], node.output[0]
    w, w_scale, w_zero = (
        store(weights, f"{base}_quantized"),
        store(scale, f"{base}_scale"),
        store(np.zeros(matrix.shape[1], dtype=np.int8), f"{base}_zero_point"),
    )
    nodes = []
    if source not in quantized:
        quantized[source] = [f"{source}_quantized", f"{source}_scale", f"{source}_zero_point"]
        nodes.append(helper.make_node("DynamicQuantizeLinear", [source], quantized[source], name=f"{source}_quantize"))
    a, a_scale, a_zero = quantized[source]
    name = node.name + "_quant"
    nodes += [
        helper.make_node("Mul", [a_scale, w_scale], [f"{name}_scales"], name=f"{name}_scales_mul"),
        helper.make_node("MatMulInteger", [a, w, a_zero, w_zero], [f"{out}_int32"], name=name),
        helper.make_node("Cast", [f"{out}_int32"], [f"{out}_float"], name=f"{name}_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{out}_float", f"{name}_scales"], [out], name=f"{name}_output_scale_mul"),
    ]
    return nodes


def gather_node(node: Any, table: np.ndarray, store: Any) -> Any:
    """GatherBlockQuantized over `table`'s rows in 8 bits: symmetric blocks of BLOCK along the row, stored as
    uint8 around 128 (the op's default zero point)."""
    import numpy as np
    from onnx import helper

    name = node.name.strip("/").replace("/", "_") + "_q8"
    rows = np.empty(table.shape, dtype=np.uint8)
    scales = np.empty((table.shape[0], table.shape[1] // BLOCK), dtype=np.float32)
    for start in range(0, table.shape[0], 8192):  # a slice at a time: the table is the largest tensor
        blocks = np.asarray(table[start : start + 8192], dtype=np.float32).reshape(-1, scales.shape[1], BLOCK)
        scale = np.abs(blocks).max(axis=2) / 127
        scale[scale == 0] = 1.0
        q = np.clip(np.round(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
        rows[start : start + 8192] = q.astype(np.uint8).reshape(-1, table.shape[1])
        scales[start : start + 8192] = scale
    return helper.make_node(
        "GatherBlockQuantized",
        [store(rows, name), node.input[1], store(scales, name + "_scales")],
        list(node.output),
        name=node.name + "_q8",
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=BLOCK,
        bits=8,
    )


def int8_block(rows: int) -> int:
    return next((b for b in (INT8_BLOCK, 64, 32, 16) if rows % b == 0), INT8_BLOCK)
