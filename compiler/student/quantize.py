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
    MatMulNBits graph and 41 ms for fp32). 7 bits, not 8 (`reduce_range`): without VNNI, onnxruntime
    multiplies uint8 by int8 with an instruction that sums two products into a saturating 16-bit
    integer (vpmaddubsw, on AVX2 and on AVX-512 without VNNI); 255 x 127 x 2 overflows it, 255 x 64 x 2
    does not. Full-range weights answered half the default student's held-out inputs wrongly on an
    AVX2 CPU. Measured (bench/isa_kernels.py; default student, label p50 on AVX-512 VNNI, 2 cores):
    full-range int8 22.8 ms, exact with VNNI only; 7-bit 23.2 ms, exact everywhere, 40/40 answers as
    fp32; uint8 weights (u8u8) 30.0 ms, exact everywhere.
- int4: blockwise int4 weights (MatMulNBits, blocks of 32) computed in int8 (accuracy_level 4); the
  fewest bytes per token, so the fastest decoding, at some cost in quality.

Both also store the token embedding table in 8 bits (GatherBlockQuantized): only one row of it is read
per token, and in fp32 it is the largest tensor of a small model (113 of 540 MB for SmolLM2-135M).
Where the output head is tied to that table and reads it through a Transpose (the portable graph of a tied
model: Gemma, SmolLM3), the head gets its own quantized copy, so no fp32 table is left beside the 8-bit one
(tiny Gemma 3, 49,152-token vocabulary: int8 25.7 MB and int4 24.9 MB against fp32's 20.3 MB before).
Quantized variants are not expected to match fp32 token for token; the verify stage scores them as shipped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

BLOCK = 32  # int4 weights and 8-bit embedding rows
INT8_BLOCK = 128


def quantize(source: Path, target: Path, variant: str) -> None:
    """Write `variant` ("int8" | "int4") of the fp32 model folder `source` into `target`."""
    import onnx

    target.mkdir(parents=True)
    for name in ("tokenizer.json", "generation.json"):
        shutil.copy2(source / name, target / name)
    model = untie_head(onnx.load(str(source / "model.onnx")))
    if variant == "int8":
        # The largest block up to INT8_BLOCK that divides a weight's rows: a block that does not is padded.
        for block in sorted({int8_block(k) for k in weight_rows(model).values()}, reverse=True):
            others = [name for name, k in weight_rows(model).items() if int8_block(k) != block]
            model = quantize_weights(model, 8, block, others)
    else:
        model = quantize_weights(model, 4, BLOCK, [])
    save(quantize_embeddings(model), target / "model.onnx")
    if variant == "int8":
        write_prefill(source, target)


def write_prefill(source: Path, target: Path, weight_bits: int = 7) -> None:
    """int8's prefill.onnx in `target` (beside its model.onnx) from the fp32 folder `source`: per-channel
    int8 weights of `weight_bits` (7: exact on CPUs without VNNI, see above; 8 saturates there)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for stale in target.glob("prefill.onnx*"):
        stale.unlink()
    with tempfile.TemporaryDirectory(prefix="distillc-prefill-", dir=target) as scratch:
        untied = Path(scratch) / "model.onnx"
        save(untie_head(onnx.load(str(source / "model.onnx"))), untied)
        quantize_dynamic(
            str(untied),
            str(target / "prefill.onnx"),
            weight_type=QuantType.QInt8,
            reduce_range=weight_bits == 7,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=weight_matmuls(untied),
            use_external_data_format=True,
        )
    prefill = quantize_embeddings(onnx.load(str(target / "prefill.onnx")))
    read_shared(prefill, target / "model.onnx")
    save(prefill, target / "prefill.onnx")


def read_shared(model: object, other: Path) -> int:
    """Point each tensor of `model` that `other` (saved with external data) holds byte for byte at `other`'s
    data file, so the package stores it once: the two int8 graphs share their 8-bit embedding table, rotary
    caches and norms (34 of the default student's 350 MB). Returns the bytes shared."""
    import hashlib

    import onnx
    from onnx.external_data_helper import ExternalDataInfo, set_external_data

    stored: dict[bytes, tuple[str, int, int]] = {}
    for tensor in onnx.load(str(other), load_external_data=False).graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = ExternalDataInfo(tensor)
            with (other.parent / info.location).open("rb") as data:
                data.seek(info.offset or 0)
                raw = data.read(info.length) if info.length else data.read()
            stored[hashlib.sha256(raw).digest()] = (info.location, info.offset or 0, len(raw))
    shared = 0
    for tensor in model.graph.initializer:  # type: ignore[attr-defined]
        if tensor.HasField("raw_data") and (found := stored.get(hashlib.sha256(tensor.raw_data).digest())):
            location, offset, length = found
            set_external_data(tensor, location, offset, length)
            tensor.ClearField("raw_data")  # left out when saved: it is read from `other`'s file
            shared += length
    return shared


def untie_head(model: object) -> object:
    """Each MatMul that reads a Transpose of a 2-D float initializer (a head tied to the embedding table)
    reads a transposed copy instead: an initializer, which the weight quantizers take. The fp32 table then
    stays only as long as a Gather reads it, and quantize_embeddings replaces that Gather."""
    from onnx import numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    floats = {i.name: i for i in graph.initializer if i.data_type == 1 and len(i.dims) == 2}  # 1: FLOAT
    plain = [n for n in graph.node if n.op_type == "Transpose" and n.input[0] in floats]
    for transpose in [n for n in plain if all(list(a.ints) == [1, 0] for a in n.attribute if a.name == "perm")]:
        readers = [n for n in graph.node if transpose.output[0] in n.input]
        if not readers or any(n.op_type != "MatMul" or list(n.input).index(transpose.output[0]) != 1 for n in readers):
            continue
        name = transpose.input[0] + "_transposed"
        table = numpy_helper.to_array(floats[transpose.input[0]])
        graph.initializer.append(numpy_helper.from_array(table.T.copy(), name))
        for reader in readers:
            reader.input[1] = name
    drop_unused(graph)
    return model


def quantize_weights(model: object, bits: int, block: int, exclude: list[str], accuracy_level: int = 4) -> object:
    """MatMulNBits for the weight MatMuls but those named in `exclude`, symmetric, computed in int8
    (accuracy_level 4) or in float (0)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model, bits=bits, block_size=block, is_symmetric=True, accuracy_level=accuracy_level, nodes_to_exclude=exclude
    )
    quantizer.process()
    return quantizer.model.model


def weight_rows(model: object) -> dict[str, int]:
    """Each MatMul by a 2-D weight: its name and the weight's rows (the length its blocks divide)."""
    graph = model.graph  # type: ignore[attr-defined]
    weights = {i.name: i for i in graph.initializer if len(i.dims) == 2}
    return {n.name: weights[n.input[1]].dims[0] for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights}


def int8_block(rows: int) -> int:
    return next((b for b in (INT8_BLOCK, 64, 32, 16) if rows % b == 0), INT8_BLOCK)


def save(model: object, path: Path) -> None:
    import onnx

    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")  # type: ignore[arg-type]


def weight_matmuls(path: Path) -> list[str]:
    """MatMul nodes that multiply by a weight: only those are quantized (attention's products of two
    activations stay in float, where int8 would cost accuracy for little speed)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def quantize_embeddings(model: object) -> object:
    """Every Gather from a constant 2-D float table (an initializer, or the transpose of one, as graphs
    whose embedding is tied to the output head have it) becomes GatherBlockQuantized over 8-bit rows:
    symmetric blocks of 32 along the row, stored as uint8 around 128 (the op's default zero point)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    floats = {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}
    transposed = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and n.input[0] in floats}
    for index, node in enumerate(graph.node):
        source = node.input[0] if node.op_type == "Gather" else ""
        if source in floats:
            table = numpy_helper.to_array(floats[source])
        elif source in transposed:
            table = numpy_helper.to_array(floats[transposed[source].input[0]]).T
        else:
            continue
        if table.shape[1] % BLOCK:
            continue
        blocks = table.reshape(table.shape[0], -1, BLOCK)
        scales = np.abs(blocks).max(axis=2) / 127
        scales[scales == 0] = 1.0
        quantized = np.clip(np.round(blocks / scales[..., None]), -127, 127).astype(np.int16) + 128
        name = node.name.strip("/").replace("/", "_") + "_q8"
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized.astype(np.uint8).reshape(table.shape), name),
                numpy_helper.from_array(scales.astype(np.float32), name + "_scales"),
            ]
        )
        graph.node[index].CopyFrom(
            helper.make_node(
                "GatherBlockQuantized",
                [name, node.input[1], name + "_scales"],
                list(node.output),
                name=node.name + "_q8",
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=1,
                block_size=BLOCK,
                bits=8,
            )
        )
    drop_unused(graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):  # type: ignore[attr-defined]
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))  # type: ignore[attr-defined]
    return model


def drop_unused(graph: object) -> None:
    """Remove Transpose nodes nothing reads any more, then initializers nothing reads."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}  # type: ignore[attr-defined]
    for node in [n for n in graph.node if n.op_type == "Transpose" and n.output[0] not in used]:  # type: ignore[attr-defined]
        graph.node.remove(node)  # type: ignore[attr-defined]
    used = {i for n in graph.node for i in n.input}  # type: ignore[attr-defined]
    for initializer in [i for i in graph.initializer if i.name not in used]:  # type: ignore[attr-defined]
        graph.initializer.remove(initializer)  # type: ignore[attr-defined]
