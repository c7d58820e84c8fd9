"""onnxruntime post-training quantization: static QDQ (calibrated) and dynamic, for the onnx backend."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.registry import IntegerOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgekit.config import Gates, QuantRecipe
from edgekit.data.calib import CalibrationData

if TYPE_CHECKING:
    from edgekit.artifact import Manifest

# Measured on EfficientNet-Lite0 (Xeon, AVX-512 VNNI, onnxruntime 1.32, 1 thread): uint8 activations 3.95-3.99 ms,
# int8 6.9-7.6 ms, fp32 7.5-8.8 ms, the same accuracy. On x86 onnxruntime rewrites int8 Q/DQ pairs to uint8 only
# where a tensor has one consumer; at residual branches 14 convs and 9 adds stayed DQ -> float -> Q.
UINT8_WHY = ("onnxruntime on x86-64 fuses QDQ groups into QLinear kernels for uint8 activations; int8 ones fall "
             "back to float kernels at tensors with several consumers (residual branches)")
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}


class _Reader(CalibrationDataReader):
    def __init__(self, calib: CalibrationData) -> None:
        self._batches = iter(list(calib.batches(1)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


class _Rank1PerChannelNote(logging.Filter):
    """onnxruntime logs (on the root logger) that per-channel does not apply to 1-D weights such as LayerNorm's
    and falls back to per-tensor for them: expected, and one line per weight."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


logging.getLogger().addFilter(_Rank1PerChannelNote())


def nodes_to_keep_float(node_paths: dict[str, str | None], patterns: tuple[str, ...]) -> list[str]:
    """The nodes whose torch module path (or, failing that, name) matches a keep_float pattern."""
    return [name for name, path in node_paths.items()
            if any(re.search(p, path or "") or re.search(p, name) for p in patterns)]


WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def weight_nodes(model_path: Path) -> list[str] | None:
    """The nodes that multiply by a weight, when the graph also multiplies two activations (attention); None for
    a model without attention. Attention models quantize those nodes only, as the tflite backend does: int8 of
    the attention scores, the softmax and the mask (torch.finfo.min where a token is masked, a range no int8 scale
    survives) cost MiniLM's intent logits a cosine of 0.54."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                       for o in n.output}
    multiplies = [n for n in graph.node if n.op_type in WEIGHT_OPS]
    if not any(n.op_type == "MatMul" and not any(i in constants for i in n.input) for n in multiplies):
        return None
    return [n.name for n in multiplies if any(i in constants for i in n.input[:2])]


def quantize(fp32: Path, out: Path, precision: str, recipe: QuantRecipe, calib: CalibrationData | None,
             work: Path, node_paths: dict[str, str | None], gates: Gates | None = None,
             manifest: Manifest | None = None) -> dict:
    """Write the quantized model to ``out``; returns what reached the quantizer, for the manifest.
    ``node_paths``: each node's torch module path, which keep_float patterns are matched against; ``gates``: the
    profile's, which int8-dynamic's choice of activations per tensor must keep on the calibration samples, run
    through ``manifest`` (the fp32 artifact's) as validation runs them."""
    keep = nodes_to_keep_float(node_paths, recipe.keep_float)
    applied = {"per_channel": recipe.per_channel, "reduce_range": recipe.reduce_range, "weights": "int8",
               "kept_float_nodes": keep}
    if precision == "int8-dynamic":
        external = any(i.data_location == onnx.TensorProto.EXTERNAL
                       for i in onnx.load(str(fp32), load_external_data=False).graph.initializer)
        source, op_types, rows, tables, per_tensor, search, tensor_matmuls = fp32, None, 0, 0, frozenset(), None, 0
        if recipe.dynamic_activations in ("per_row", "auto"):
            from edgekit.backends import onnx_per_row

            model = onnx.load(str(fp32))
            if recipe.dynamic_activations == "auto":
                samples = {k: v[:recipe.search_samples] for k, v in calib.inputs.items()} if calib and manifest \
                    else {}
                per_tensor, search = onnx_per_row.choose_per_tensor(
                    model, fp32, manifest, set(keep), recipe.per_channel, recipe.reduce_range, samples,
                    gates or Gates(), work, external)
            model, rows, tables = onnx_per_row.quantize(model, set(keep), recipe.per_channel, recipe.reduce_range,
                                                        per_tensor)
            tensor_matmuls = sum(n.op_type == "DynamicQuantizeMatMul" for n in model.graph.node)
            source = work / "per_row.onnx"
            # a model that came past protobuf's 2 GB limit goes on with its weights in a file beside the graph
            onnx.save(model, str(source), save_as_external_data=external, all_tensors_to_one_file=True,
                      location=source.name + ".data")
            op_types = [op for op in IntegerOpsRegistry if op not in ("MatMul", "Gather")]  # the rest as onnxruntime
        quantize_dynamic(str(source), str(out), per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                         weight_type=QuantType.QInt8, nodes_to_exclude=keep, op_types_to_quantize=op_types,
                         use_external_data_format=external)
        if rows or tables:
            chosen = {"dynamic_activations": recipe.dynamic_activations}
            if search is not None:
                chosen.update(row_search=search, calibrated="samples" in search)
            return {**applied, "activations": f"dynamic, one scale and offset per row (token) at "
                                              f"{rows - tensor_matmuls} MatMuls; per tensor elsewhere"
                                              f"{f' ({tensor_matmuls} MatMuls chosen)' if tensor_matmuls else ''}",
                    "lookup_tables": f"{tables} in int8 with one scale per row", **chosen}
        return {**applied, "activations": "dynamic (quantized per call, one scale per tensor)",
                "dynamic_activations": "per_tensor"}
    prepared = work / "prepared.onnx"
    # shape inference only: onnxruntime's graph optimization here drops the nodes' name scopes on transformers
    # (no node of MiniLM's int8 graph kept its torch module, so neither keep_float nor the ledger could find
    # one), and it changed neither the graph nor the speed of EfficientNet-Lite0; the session still optimizes
    quant_pre_process(str(fp32), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    weights_only = weight_nodes(prepared)
    quantize_static(str(prepared), str(out), _Reader(calib), quant_format=QuantFormat.QDQ,
                    per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=METHODS[recipe.method], nodes_to_exclude=keep,
                    nodes_to_quantize=weights_only)
    return {**applied, "method": recipe.method, "activations": "uint8 (QDQ, U8S8)",
            "activations_why": UINT8_WHY,
            "quantized": "all supported ops" if weights_only is None else
            f"the {len(weights_only)} ops that multiply by a weight (attention model)"}
