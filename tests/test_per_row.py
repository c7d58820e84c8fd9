"""onnx int8-dynamic with one activation scale per row (per token): the rewrite computes what per-row int8
arithmetic gives, quantizes a row once for every MatMul that reads it, keeps each node's torch module, honours
keep_float, and runs in onnxruntime through edgekit's own export on a real attention model."""
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.backends.onnx import NAME_SCOPES, node_paths
from edgekit.backends.onnx_per_row import PREFIX, quantize
from edgekit.backends.onnx_session import PRECISE_INT8, OnnxSession
from edgekit.config import Gates, TargetProfile, Threshold, load_profile
from edgekit.results import Status


def _two_matmuls(rng) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """y1 = x @ w1, y2 = x @ w2 on x [2, 3, 8]: two MatMuls reading one activation."""
    w1, w2 = rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"], name="mm1"),
             helper.make_node("MatMul", ["x", "w2"], ["y2"], name="mm2")]
    for node, scope in zip(nodes, ("['', 'q', 'linear']", "['', 'k', 'linear']")):  # module path, then the op
        node.metadata_props.add(key=NAME_SCOPES, value=scope)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2")],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w1, w2


def _per_row_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-row asymmetric uint8 activations (256 codes from the row's low to its high value), per-channel
    symmetric int8 weights, exact integer products."""
    low, high = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    step = (high - low) / 255
    codes = np.round((x - low) / step)
    assert codes.min() >= 0 and codes.max() <= 255
    w_step = np.abs(w).max(0) / 127
    w_q = np.clip(np.round(w / w_step), -127, 127)
    return (codes @ w_q) * step * w_step + low * (w_q * w_step).sum(0)


def test_the_rewrite_is_per_row_int8_arithmetic_and_quantizes_a_row_once(tmp_path):
    rng = np.random.default_rng(0)
    model, w1, w2 = _two_matmuls(rng)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    x[0, 1] *= 50  # one loud token: with one scale per tensor it would set every other token's step
    rewritten, count, tables = quantize(model, set(), per_channel=True, reduce_range=False)
    assert count == 2 and tables == 0
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and ops.count("ReduceMin") == 1 and "MatMul" not in ops
    assert {i.name for i in rewritten.graph.initializer} >= {f"{PREFIX}0_weight", f"{PREFIX}1_weight"}
    assert not {"w1", "w2"} & {i.name for i in rewritten.graph.initializer}  # the float weights are gone
    # edgekit's own session: on x86 without VNNI it asks for the exact U8U8 kernels, as every artifact's does
    onnx.save(rewritten, str(tmp_path / "rows.onnx"))
    outputs = OnnxSession(tmp_path / "rows.onnx", {"threads": 1}).run({"x": x})
    y1, y2 = outputs["y1"], outputs["y2"]
    np.testing.assert_allclose(y1, _per_row_reference(x, w1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y2, _per_row_reference(x, w2), rtol=1e-4, atol=1e-4)
    # the exact U8U8 kernels that x86 without VNNI gets (onnxruntime rewrites the int8 weights to uint8 for them),
    # forced here whatever this CPU is: the codes use all 256 values, which U8S8 there would saturate
    options = ort.SessionOptions()
    options.add_session_config_entry(PRECISE_INT8, "1")
    precise = ort.InferenceSession(str(tmp_path / "rows.onnx"), options, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(precise.run(["y1"], {"x": x})[0], _per_row_reference(x, w1), rtol=1e-4, atol=1e-4)
    # the quiet tokens keep their precision next to the loud one
    quiet = np.abs(y1[0, 0] - x[0, 0] @ w1).max() / np.abs(x[0, 0] @ w1).max()
    assert quiet < 0.03
    # every new node still names the torch module of the MatMul it replaced; a kept one stays float
    paths = node_paths(rewritten.graph)
    assert {paths[n.name] for n in rewritten.graph.node if n.op_type == "MatMulIntegerToFloat"} == {"q", "k"}
    kept, count, _ = quantize(_two_matmuls(rng)[0], {"mm2"}, per_channel=True, reduce_range=False)
    assert count == 1 and [n.name for n in kept.graph.node if n.op_type == "MatMul"] == ["mm2"]


def test_an_embedding_table_gets_one_int8_scale_per_row(tmp_path):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(50, 16)).astype(np.float32)
    table[7] *= 100  # one loud row: one scale for the whole table would leave the others a few codes
    node = helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup")
    node.metadata_props.add(key=NAME_SCOPES, value="['', 'embed', 'embedding']")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    rewritten, matmuls, tables = quantize(model, set(), per_channel=True, reduce_range=False)
    assert (matmuls, tables) == (0, 1) and "table" not in {i.name for i in rewritten.graph.initializer}
    onnx.save(rewritten, str(tmp_path / "table.onnx"))
    ids = np.array([[7, 0, 3, 49]], np.int64)
    got = OnnxSession(tmp_path / "table.onnx", {"threads": 1}).run({"ids": ids})["rows"]
    want = table[ids]
    step = np.abs(want).max(-1, keepdims=True) / 127
    assert np.all(np.abs(got - want) <= step / 2 + 1e-6)  # each row within half its own step
    assert {node_paths(rewritten.graph)[n.name] for n in rewritten.graph.node} == {"embed"}
    model.graph.CopyFrom(graph)  # quantize rewrote it in place
    assert quantize(model, {"lookup"}, per_channel=True, reduce_range=False)[2] == 0


def _variant(name: str, gates: Gates | None = None, **quantization) -> TargetProfile:
    shipped = load_profile("onnx-cpu-int8-dynamic")
    return replace(shipped, name=name, gates=gates or shipped.gates,
                   quantization=replace(shipped.quantization, **quantization))


def test_a_transformer_runs_per_row_dynamic_int8_in_onnxruntime(tmp_path):
    impossible = Gates(outputs={"*": {"cosine": Threshold(warn=1.0, fail=0.5)}})
    profiles = [load_profile("onnx-cpu-int8-dynamic"), _variant("per-row", dynamic_activations="per_row"),
                _variant("per-tensor", dynamic_activations="per_tensor"), _variant("auto-impossible", impossible)]
    result = export("zoo:transformer", profiles, tmp_path / "run", calib="task:calib")
    rows = {r.target: r for r in result.rows}
    row = rows["per-row"]
    assert row.status is not Status.FAIL and row.stage is None, row.reason
    assert row.precision.compute == "int8"
    assert result.torch_accuracy - row.accuracy <= 0.005
    quant = read_manifest(tmp_path / "run" / row.target / "manifest.json").extra["quantization"]
    assert quant["dynamic_activations"] == "per_row" and "per row" in quant["activations"]
    assert "row_search" not in quant and quant["calibration_samples"] == 0  # nothing was judged on it
    assert rows["per-tensor"].status is not Status.FAIL
    model = onnx.load(str(tmp_path / "run" / row.target / "model.onnx"))
    rewritten = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat" and n.name.startswith(PREFIX)]
    assert rewritten and all(node_paths(model.graph)[n.name] for n in rewritten)
    assert not [n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"]

    # "auto" (shipped): the activations that lose least go per tensor while the gates hold on calibration samples
    shipped = rows["onnx-cpu-int8-dynamic"]
    assert shipped.status is not Status.FAIL and shipped.stage is None, shipped.reason
    quant = read_manifest(tmp_path / "run" / shipped.target / "manifest.json").extra["quantization"]
    search = quant["row_search"]
    assert quant["dynamic_activations"] == "auto" and quant["calibration_samples"] > 0
    warn = load_profile("onnx-cpu-int8-dynamic").gates.for_output("logits")["cosine"].warn
    assert search["outputs"]["logits"]["cosine"] >= warn
    assert search["outputs"]["logits"]["sqnr_db"] >= search["all_per_row"]["logits"]["sqnr_db"] - search["budget_db"]
    # the ones chosen are the ones that lost least alone, and exactly their MatMuls became DynamicQuantizeMatMul
    alone = search["alone_sqnr_db"]
    chosen = search["per_tensor"]
    assert len(alone) == search["candidates"] and list(alone)[:len(chosen)] == chosen
    model = onnx.load(str(tmp_path / "run" / shipped.target / "model.onnx"))
    fused = [n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert {n.input[0] for n in fused} == set(chosen)
    assert all(node_paths(model.graph)[n.name] for n in fused)
    # gates that all per row does not keep itself: nothing goes per tensor, and the record says why
    quant = read_manifest(tmp_path / "run" / "auto-impossible" / "manifest.json").extra["quantization"]
    assert "does not keep the gates" in quant["row_search"]["chosen"] and "per_tensor" not in quant["row_search"]
    # the fusion model's text branch looks its tokens up in an embedding table: int8 with one scale per row
    fusion = export("zoo:fusion", "onnx-cpu-int8-dynamic", tmp_path / "fusion", calib="task:calib")
    assert fusion.rows[0].status is not Status.FAIL and fusion.rows[0].stage is None, fusion.rows[0].reason
    assert fusion.torch_accuracy - fusion.rows[0].accuracy <= 0.005
    quant = read_manifest(tmp_path / "fusion" / "onnx-cpu-int8-dynamic" / "manifest.json").extra["quantization"]
    assert quant["lookup_tables"].startswith("1 ")
