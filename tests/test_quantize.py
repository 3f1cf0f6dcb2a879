"""The quantized variants' graphs: which kernels each graph runs, and an 8-bit embedding table that
gives back every row it stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from distillc.student.quantize import DataFile, Weights, quantize, write_graph
from distillc_runtime.generate import Generator
from tests.variants import export_fp32


def embedding_graph(tied: bool) -> tuple[onnx.ModelProto, np.ndarray]:
    """ids -> rows of a 100 x 64 table, read directly or (tied to an output head) through a Transpose."""
    table = np.random.default_rng(0).normal(0, 0.05, (100, 64)).astype(np.float32)
    table[7] = 0.0  # an all-zero row must come back as zeros, not NaN
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"])]
    stored = table
    if tied:
        stored = table.T.copy()
        nodes.insert(0, helper.make_node("Transpose", ["head"], ["table"], perm=[1, 0]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, 64])],
        [numpy_helper.from_array(stored, "head" if tied else "table")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), table


def test_embedding_rows_come_back_within_half_a_quantization_step(tmp_path: Path) -> None:
    ids = np.arange(100, dtype=np.int64)
    for tied in (False, True):
        model, table = embedding_graph(tied)
        folder = tmp_path / f"tied-{tied}"
        folder.mkdir()
        onnx.save(model, str(folder / "float.onnx"), save_as_external_data=True, location="float.onnx.data")
        with DataFile(folder / "q.onnx.data") as data:
            write_graph(Weights(folder / "float.onnx"), folder / "q.onnx", data, "nbits", 8)
        quantized = onnx.load(str(folder / "q.onnx"))
        assert [n.op_type for n in quantized.graph.node] == ["GatherBlockQuantized"]
        assert all(i.data_type != TensorProto.FLOAT or i.name.endswith("_scales") for i in quantized.graph.initializer)
        rows = ort.InferenceSession(str(folder / "q.onnx")).run(None, {"ids": ids})[0]
        step = np.abs(table.reshape(100, 2, 32)).max(axis=2, keepdims=True) / 127
        assert np.all(np.abs(rows - table).reshape(100, 2, 32) <= step / 2 + 1e-7)
        assert np.all(rows[7] == 0.0)


def test_int8_writes_a_decoding_graph_and_a_prefill_graph_that_answer_alike(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig

    fp32 = export_fp32(tiny_model, tmp_path / "fp32")
    quantize(fp32, tmp_path / "int8", "int8")
    names = ("model.onnx", "prefill.onnx")
    graphs = {name: onnx.load(str(tmp_path / "int8" / name), load_external_data=False) for name in names}
    ops = {name: {n.op_type for n in graph.graph.node} for name, graph in graphs.items()}
    assert "MatMulNBits" in ops["model.onnx"] and "MatMulInteger" not in str(ops["model.onnx"])
    assert "MatMulNBits" not in ops["prefill.onnx"] and any("MatMulInteger" in op for op in ops["prefill.onnx"])
    # No float copy of the vocabulary-sized tables (embedding, output head) is left in either graph.
    vocab = AutoConfig.from_pretrained(tiny_model).vocab_size
    for name, graph in graphs.items():
        assert "GatherBlockQuantized" in ops[name], name
        floats = [i.name for i in graph.graph.initializer if i.data_type == TensorProto.FLOAT and vocab in i.dims]
        assert floats == [] or all(f.endswith("_scales") or "scale" in f for f in floats), (name, floats)

    # Prefill weights are 7-bit (at most 64 either way): uint8 x int8 products of two adjacent inputs stay
    # within the 16-bit sums CPUs without VNNI make (255 x 64 x 2 < 32768); full-range weights saturate there.
    whole_prefill = onnx.load(str(tmp_path / "int8" / "prefill.onnx"))
    int8_weights = [
        numpy_helper.to_array(i) for i in whole_prefill.graph.initializer if i.data_type == TensorProto.INT8
    ]
    assert int8_weights and all(np.abs(w.astype(np.int16)).max() <= 64 for w in int8_weights)

    # The prompt's pass, and so the first token, is the prefill graph's; the steps after read the cache it
    # wrote from the decoding graph.
    pair = Generator(tmp_path / "int8")
    ids = pair.prompt_ids("the kettle was lovely")
    prefill_only = shutil.copytree(tmp_path / "int8", tmp_path / "prefill-only")
    (prefill_only / "model.onnx").unlink()  # the data files stay: prefill.onnx reads from both
    (prefill_only / "prefill.onnx").rename(prefill_only / "model.onnx")
    alone = Generator(prefill_only)
    assert alone.layout.prefill is None and pair.layout.prefill is not None
    steps = pair.generate_batch([ids], 8, stop_at_eos=False)[0]
    assert len(steps) == 8 and steps[0] == alone.generate_batch([ids], 1, stop_at_eos=False)[0][0]

    # What both graphs hold alike (the 8-bit embedding table first) is stored once, in model.onnx.data.
    shared = {
        t.name: {e.key: e.value for e in t.external_data}
        for t in graphs["prefill.onnx"].graph.initializer
        if any(e.key == "location" and e.value == "model.onnx.data" for e in t.external_data)
    }
    assert any(name.endswith("_q8") for name in shared) and any(name.endswith("_q8_scales") for name in shared)
    table = next(t for t in graphs["prefill.onnx"].graph.initializer if t.name.endswith("_q8"))
    assert int(shared[table.name]["length"]) == np.prod(table.dims)  # uint8 rows: one byte each
    data = (tmp_path / "int8" / "prefill.onnx.data").read_bytes()
    whole = onnx.load(str(tmp_path / "int8" / "prefill.onnx"))
    stored = next(t for t in whole.graph.initializer if t.name == table.name)
    assert stored.raw_data not in data  # read from model.onnx.data, not written twice
