"""Dynamic int8 with one activation scale and offset per row (per token), for the onnx backend (onnxruntime).

onnxruntime's own dynamic quantization (DynamicQuantizeLinear) takes one scale for the whole activation tensor, so a
few tokens with large values (a transformer's [CLS] and [SEP]) set the step for every other token. XNNPACK (LiteRT)
quantizes each row on its own, asymmetrically, and OpenVINO each group of 32 values. Here each MatMul by a constant
2-D weight becomes: the row's low and high values, codes = floor((x - low) * 255 / (high - low) + 0.5) as uint8,
onnxruntime's MatMulIntegerToFloat with the per-channel symmetric int8 weight, then divided by the row's gain and
plus low times the weight's column sums (the offset the codes leave out). Rows that several MatMuls read (a layer's
query, key and value) are quantized once. Measured on the MiniLM intent classifier (AVX-512 VNNI,
onnx-cpu-int8-dynamic, 72 requests), logits cosine against torch: 0.99622 per tensor, 0.99855 per row symmetric
(one scale from the row's largest magnitude, the first version), 0.99933 per row with the offset: a transformer's
rows lean to one side, and a symmetric code wastes half its range there. Embedding tables get one int8 scale per
row as well: 0.99948 with them (one scale per table, as onnxruntime does it, 0.99933).

Each op onnxruntime runs costs a few microseconds whatever its size (about 3.5 us at one thread on that CPU), so
the rewrite is written in few ops: the offset and the rounding ride on one multiply-add before the cast (a cast to
uint8 truncates), and the fused MatMulIntegerToFloat scales by the weight's channel scales."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from edgekit.artifact import Manifest
    from edgekit.config import Gates

PREFIX = "edgekit_row_"
MS_DOMAIN = "com.microsoft"


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _weight(initializers: dict[str, onnx.TensorProto], node: onnx.NodeProto) -> np.ndarray | None:
    if node.op_type != "MatMul" or node.input[1] not in initializers:
        return None
    weight = numpy_helper.to_array(initializers[node.input[1]])
    return weight if weight.ndim == 2 and weight.dtype == np.float32 else None


def _table(initializers: dict[str, onnx.TensorProto], node: onnx.NodeProto) -> np.ndarray | None:
    """The constant 2-D float table a Gather looks rows up in (an embedding), else None."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if node.op_type != "Gather" or axis != 0 or node.input[0] not in initializers:
        return None
    table = numpy_helper.to_array(initializers[node.input[0]])
    return table if table.ndim == 2 and table.dtype == np.float32 else None


def _quantized_weight(weight: np.ndarray, per_channel: bool, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights [K, N] and their scales ([N] per output channel, else one)."""
    top = 2 ** (bits - 1) - 1
    peak = np.abs(weight).max(axis=0) if per_channel else np.full(weight.shape[1], np.abs(weight).max())
    scale = (np.maximum(peak, 1e-12) / top).astype(np.float32)
    return np.clip(np.round(weight / scale), -top, top).astype(np.int8), scale


def row_inputs(model: onnx.ModelProto, keep: set[str]) -> list[str]:
    """The activations :func:`quantize` quantizes per row (each MatMul by a constant 2-D float weight reads one;
    a MatMul named in ``keep`` stays float), in graph order, each once."""
    initializers = {i.name: i for i in model.graph.initializer}
    return list(dict.fromkeys(n.input[0] for n in model.graph.node
                              if n.name not in keep and _weight(initializers, n) is not None))


class _Rewrite:
    """The graph being rewritten: its new nodes in order, the constants they read, the float weights they replace,
    and each activation's per-row codes (quantized once, however many MatMuls read it). Each new node carries the
    metadata of the node it replaces."""

    def __init__(self, opset: int):
        self.opset = opset
        self.constants = [numpy_helper.from_array(np.array(255, np.float32), PREFIX + "levels"),
                          numpy_helper.from_array(np.array(0.5, np.float32), PREFIX + "half"),
                          numpy_helper.from_array(np.array(1e-12, np.float32), PREFIX + "tiny"),
                          numpy_helper.from_array(np.array(1, np.float32), PREFIX + "one")]
        if opset >= 18:
            self.constants.append(numpy_helper.from_array(np.array([-1], np.int64), PREFIX + "last_axis"))
        self.rows: dict[str, tuple[str, str, str]] = {}  # activation -> (its uint8 codes, gain, low)
        self.nodes: list[onnx.NodeProto] = []
        self.used_weights: set[str] = set()

    def made(self, op: str, inputs: list[str], output: str, like: onnx.NodeProto, **attrs) -> str:
        node = helper.make_node(op, inputs, [output], name=output, **attrs)
        node.metadata_props.extend(like.metadata_props)
        self.nodes.append(node)
        return output

    def replacing(self, op: str, inputs: list[str], like: onnx.NodeProto, **attrs) -> None:
        """The last node of a rewrite: it writes ``like``'s output under ``like``'s name."""
        out = helper.make_node(op, inputs, [like.output[0]], name=like.name, **attrs)
        out.metadata_props.extend(like.metadata_props)
        self.nodes.append(out)

    def reduced(self, op: str, x: str, output: str, like: onnx.NodeProto) -> str:
        if self.opset >= 18:
            return self.made(op, [x, PREFIX + "last_axis"], output, like, keepdims=1)
        return self.made(op, [x], output, like, axes=[-1], keepdims=1)

    def table_lookup(self, node: onnx.NodeProto, table: np.ndarray, index: int) -> None:
        """A Gather from a float table becomes a Gather from its int8 rows times each row's scale."""
        # onnxruntime's own dynamic quantization gives a table one scale: MiniLM's word embedding (30522 rows)
        # came out at 28 dB, the first diverging layer of the int8 model. One scale per row costs a lookup.
        t = f"{PREFIX}table{index}_"
        w_q, w_scale = _quantized_weight(table.T, per_channel=True, bits=8)
        self.constants += [numpy_helper.from_array(np.ascontiguousarray(w_q.T), t + "codes"),
                           numpy_helper.from_array(w_scale[:, None], t + "scales")]
        self.used_weights.add(node.input[0])
        codes = self.made("Gather", [t + "codes", node.input[1]], t + "rows", node)
        scales = self.made("Gather", [t + "scales", node.input[1]], t + "row_scales", node)
        self.replacing("Mul", [self.made("Cast", [codes], t + "float", node, to=TensorProto.FLOAT), scales], node)

    def per_tensor_matmul(self, node: onnx.NodeProto, w_q: np.ndarray, w_scale: np.ndarray, p: str) -> None:
        """onnxruntime's DynamicQuantizeMatMul: one scale and zero point for the whole activation."""
        self.constants += [numpy_helper.from_array(w_q, p + "weight"), numpy_helper.from_array(w_scale, p + "scale"),
                           numpy_helper.from_array(np.zeros(w_q.shape[1], np.int8), p + "zero")]
        self.replacing("DynamicQuantizeMatMul", [node.input[0], p + "weight", p + "scale", p + "zero"], node,
                       domain=MS_DOMAIN)

    def row_codes(self, x: str, like: onnx.NodeProto) -> tuple[str, str, str]:
        """The uint8 codes of activation ``x``, one low value and gain per row; made the first time it is asked."""
        if x not in self.rows:
            made, q = self.made, f"{PREFIX}x{len(self.rows)}_"
            low, high = self.reduced("ReduceMin", x, q + "low", like), self.reduced("ReduceMax", x, q + "high", like)
            span = made("Max", [made("Sub", [high, low], q + "range", like), PREFIX + "tiny"], q + "span", like)
            gain = made("Div", [PREFIX + "levels", span], q + "gain", like)  # codes per unit
            # x * gain + (0.5 - low * gain) lies in [0.5, 255.5]: truncated, the codes of round((x - low) * gain)
            start = made("Sub", [PREFIX + "half", made("Mul", [low, gain], q + "low_codes", like)], q + "start", like)
            codes = made("Add", [made("Mul", [x, gain], q + "scaled", like), start], q + "shifted", like)
            self.rows[x] = made("Cast", [codes], q + "uint8", like, to=TensorProto.UINT8), gain, low
        return self.rows[x]

    def per_row_matmul(self, node: onnx.NodeProto, w_q: np.ndarray, w_scale: np.ndarray, p: str) -> None:
        """MatMulIntegerToFloat on the row codes, divided by the row's gain, plus low times the column sums."""
        codes, gain, low = self.row_codes(node.input[0], node)
        column_sums = (w_q.astype(np.int64).sum(axis=0) * w_scale).astype(np.float32)
        self.constants += [numpy_helper.from_array(w_q, p + "weight"), numpy_helper.from_array(w_scale, p + "scale"),
                           numpy_helper.from_array(column_sums, p + "column_sums")]
        products = self.made("MatMulIntegerToFloat", [codes, p + "weight", PREFIX + "one", p + "scale"],
                             p + "products", node, domain=MS_DOMAIN)
        rescaled = self.made("Div", [products, gain], p + "rows", node)
        offset = self.made("Mul", [low, p + "column_sums"], p + "offset", node)
        self.replacing("Add", [rescaled, offset], node)

    def install(self, model: onnx.ModelProto, uses_ms_domain: bool) -> None:
        """Put the new nodes and constants into ``model``, dropping the float weights no node reads any more."""
        graph = model.graph
        still_read = {i for n in self.nodes for i in n.input}
        kept = [i for i in graph.initializer if i.name not in self.used_weights or i.name in still_read]
        del graph.node[:]
        graph.node.extend(self.nodes)
        del graph.initializer[:]
        graph.initializer.extend(kept + self.constants)
        if uses_ms_domain and not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def quantize(model: onnx.ModelProto, keep: set[str], per_channel: bool, reduce_range: bool,
             per_tensor: frozenset[str] = frozenset()) -> tuple[onnx.ModelProto, int, int]:
    """``model`` with every MatMul by a constant 2-D float weight (not named in ``keep``) in per-row dynamic int8,
    and every lookup in a constant float table (an embedding) from an int8 table with one scale per row; returns it,
    how many MatMuls and how many tables were rewritten. A MatMul that reads an activation named in ``per_tensor``
    becomes onnxruntime's DynamicQuantizeMatMul instead (one scale and zero point for the whole activation, one
    fused op: per row adds ten per activation and three per MatMul). Each new node carries the metadata of the
    node it replaces, so the torch module it came from (name scopes) stays known to keep_float, the ledger and the
    profiler."""
    initializers = {i.name: i for i in model.graph.initializer}
    rewrite = _Rewrite(_opset(model))
    rewritten = tables = 0
    for node in model.graph.node:
        table = None if node.name in keep else _table(initializers, node)
        if table is not None:
            rewrite.table_lookup(node, table, tables)
            tables += 1
            continue
        weight = None if node.name in keep else _weight(initializers, node)
        if weight is None:
            rewrite.nodes.append(node)
            continue
        w_q, w_scale = _quantized_weight(weight, per_channel, 7 if reduce_range else 8)
        rewrite.used_weights.add(node.input[1])
        matmul = rewrite.per_tensor_matmul if node.input[0] in per_tensor else rewrite.per_row_matmul
        matmul(node, w_q, w_scale, f"{PREFIX}{rewritten}_")
        rewritten += 1
    rewrite.install(model, uses_ms_domain=rewritten > 0)
    return model, rewritten, tables


# How far (dB, on every output) onnxruntime's one-scale-per-tensor DynamicQuantizeMatMul may take the model below
# all-per-row, on top of the profile's gates: per row is what keeps a transformer's int8 near float, and the
# calibration samples that judge it are not the user's data. MiniLM intent (AVX-512 VNNI + AMX Xeon, one thread,
# fp32 9.67 ms; logits SQNR on calibration / validation requests): all per row 4.19 ms, 29.97 / 29.81 dB; the 12
# activations that lose least per tensor 3.83 ms, 28.65 / 28.44 dB; 15: 3.72 ms, 27.12 / 27.02 dB; all 24 per
# tensor 3.31 ms, 22.21 / 21.66 dB.
ROW_BUDGET_DB = 1.5


def choose_per_tensor(model: onnx.ModelProto, fp32: Path, manifest: Manifest, keep: set[str], per_channel: bool,
                      reduce_range: bool, samples: dict[str, np.ndarray], gates: Gates, work: Path,
                      external: bool = False) -> tuple[frozenset[str], dict]:
    """The activations to quantize per tensor instead of per row (each saves ten ops and three per MatMul), and the
    record of why. Each activation alone goes per tensor and is measured on ``samples`` (input name -> samples,
    run as validation runs them, through ``manifest``, the fp32 artifact's); then the most that lose least, as many
    as keep every output gate within warn and within ROW_BUDGET_DB of all per row (a bisection over that order).
    ``model`` is ``fp32`` loaded; it is not changed. ``external``: its weights are past protobuf's 2 GB (each trial
    would be written out in two files): not searched."""
    from edgekit.backends.common import keeps_gates
    from edgekit.backends.execute import run_batched
    from edgekit.backends.onnx_session import OnnxSession

    candidates = row_inputs(model, keep)
    if not samples or not candidates:
        why = "no calibration samples to judge on" if candidates else "no MatMul to quantize"
        return frozenset(), {"chosen": f"per row everywhere: {why}"}
    if external:
        return frozenset(), {"chosen": "per row everywhere: a model past protobuf's 2 GB is not searched"}

    # in batches, as validation runs them: one scale per tensor then spans a batch, which a batch of one would not
    def run(path: Path) -> dict[str, np.ndarray]:
        return run_batched(OnnxSession(path, {"threads": 0}), manifest, samples)

    reference = run(fp32)
    trial_path = work / "per_row_trial.onnx"

    def trial(per_tensor: frozenset[str]) -> tuple[bool, dict, float]:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save(quantize(copy, keep, per_channel, reduce_range, per_tensor)[0], str(trial_path))
        ok, measured = keeps_gates(reference, run(trial_path), gates)
        return ok, measured, min(m["sqnr_db"] for m in measured.values())

    ok, all_rows, all_rows_db = trial(frozenset())
    record = {"candidates": len(candidates), "samples": len(next(iter(samples.values()))), "all_per_row": all_rows,
              "budget_db": ROW_BUDGET_DB}
    if not ok:
        return frozenset(), {**record, "chosen": "per row everywhere: it does not keep the gates itself"}
    alone = {x: trial(frozenset({x}))[2] for x in candidates}
    order = sorted(candidates, key=lambda x: -alone[x])
    low, high, chosen = 0, len(order), all_rows
    while low < high:
        middle = (low + high + 1) // 2
        ok, measured, db = trial(frozenset(order[:middle]))
        if ok and db >= all_rows_db - ROW_BUDGET_DB:
            low, chosen = middle, measured
        else:
            high = middle - 1
    trial_path.unlink(missing_ok=True)
    return frozenset(order[:low]), {**record, "per_tensor": order[:low], "outputs": chosen,
                                    "alone_sqnr_db": {x: round(alone[x], 2) for x in order},
                                    "chosen": f"{low} of {len(order)} activations per tensor"}
