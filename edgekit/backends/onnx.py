"""ONNX: torch.onnx dynamo exporter (onnxscript) with a dynamic batch axis, checked by onnx.checker, run in
onnxruntime on the CPU execution provider."""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from edgekit.artifact import Manifest, Precision, TensorSpec, file_entry
from edgekit.backends.base import Option
from edgekit.backends.common import (
    ConversionCache,
    batch_dynamic_shapes,
    quantization_record,
    storage_type,
    versions,
)
from edgekit.backends.onnx_session import PROVIDER, OnnxSession
from edgekit.config import CALIBRATION_METHODS, QUANTIZED_PRECISIONS, TargetProfile
from edgekit.errors import EdgekitError

if TYPE_CHECKING:  # export-side types: opening an artifact (bench workers) never imports torch
    from edgekit.data.calib import CalibrationData
    from edgekit.spec import ModelSpec

ort.set_default_logger_severity(3)
logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes

MODEL_FILE = "model.onnx"
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                 "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def strip_metadata(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with local paths, FX node text): it is not
    needed to run and can be a third of a small model's file. ``keep`` names properties to leave."""
    model = onnx.load(str(path))
    graph = model.graph
    for item in [*graph.node, *graph.value_info, *graph.input, *graph.output, *graph.initializer]:
        props = [p for p in item.metadata_props if p.key in keep]
        del item.metadata_props[:]
        item.metadata_props.extend(props)
    onnx.save(model, str(path))


def _dtype_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _specs(values) -> tuple[TensorSpec, ...]:
    out = []
    for v in values:
        dims = tuple(d.dim_param or d.dim_value if d.HasField("dim_value") or d.dim_param else "?"
                     for d in v.type.tensor_type.shape.dim)
        out.append(TensorSpec(v.name, dims, _dtype_name(v.type.tensor_type.elem_type)))
    return tuple(out)


def read_precision(path: Path, declared: str, threads: int = 1) -> Precision:
    """What onnxruntime really runs: the types of the graph that its optimizer leaves, read back from the file
    onnxruntime writes after optimization (not from what was asked for)."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.optimized_model_filepath = optimized
        options.intra_op_num_threads = threads
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(optimized).graph
    weights: Counter[str] = Counter()  # elements per storage type; shape constants (int64) are not weights
    for t in graph.initializer:
        if t.data_type != onnx.TensorProto.INT64:
            weights[_dtype_name(t.data_type)] += int(np.prod(t.dims))
    ops = Counter(n.op_type for n in graph.node)
    quantized = sum(c for op, c in ops.items() if op in QUANTIZED_OPS)
    value_types = Counter(_dtype_name(v.type.tensor_type.elem_type) for v in graph.value_info)
    if quantized:
        compute = "int8"
    elif value_types.get("float16", 0) > value_types.get("float32", 0):
        compute = "float16"
    else:
        compute = "float32"
    weight_type = storage_type(weights)
    return Precision(declared, compute, weight_type,
                     {"weight_elements": dict(weights), "quantized_ops": quantized,
                      "activation_types": dict(value_types), "provider": "CPUExecutionProvider"})


_EXPORTED = ConversionCache()


def _export(spec: ModelSpec, profile: TargetProfile, path: Path) -> bytes:
    """The dynamo export with all metadata (each target strips what it does not need)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

        torch.onnx.export(spec.module, spec.example_inputs, str(path), dynamo=True, external_data=False,
                          input_names=list(spec.input_names), output_names=list(spec.output_names),
                          dynamic_shapes=batch_dynamic_shapes(spec), opset_version=profile.runtime.opset,
                          verbose=False, report=False)
    return path.read_bytes()


OPTIONS = {
    "runtime.layout": Option(values=("NCHW",)),  # the exported graph keeps the model's own layout
    "runtime.device": Option(values=("CPU",)),
    "runtime.opset": Option(),
    "quantization.method": Option(("int8",), CALIBRATION_METHODS),
    "quantization.per_channel": Option(QUANTIZED_PRECISIONS),
    "quantization.reduce_range": Option(QUANTIZED_PRECISIONS),
}


class OnnxBackend:
    name = "onnx"
    extra = "onnx"
    runtime_package = "onnxruntime"  # what a device installs to run the artifact
    precisions = ("fp32", "int8", "int8-dynamic")
    options = OPTIONS
    session_module = Path(__file__).with_name("onnx_session.py")

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        if profile.precision not in self.precisions:
            raise EdgekitError(f"{profile.name}: the onnx backend cannot make {profile.precision}; "
                               f"it makes {', '.join(self.precisions)}")
        path = folder / MODEL_FILE
        path.write_bytes(_EXPORTED.get(spec.module, (profile.runtime.opset,), lambda: _export(spec, profile, path)))
        # name scopes map nodes to torch module paths, for quantization's keep_float patterns
        strip_metadata(path, keep=("pkg.torch.onnx.name_scopes",) if profile.precision in QUANTIZED_PRECISIONS
                       else ())
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        precision = read_precision(path, "fp32")
        return Manifest(source, profile.name, self.name, "NCHW", _specs(model.graph.input),
                        _specs(model.graph.output), precision, (file_entry(folder, MODEL_FILE),),
                        versions("onnx", "onnxscript", "onnxruntime"), None,
                        {"opset": profile.runtime.opset,
                         "runtime": {"threads": profile.runtime.threads, "provider": PROVIDER}})

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        from edgekit.backends import onnx_quant

        path = folder / manifest.model_file
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            os.replace(path, fp32)
            applied = onnx_quant.quantize(fp32, path, profile.precision, profile.quantization, calib, Path(tmp))
            strip_metadata(fp32)
            fp32_bytes = fp32.stat().st_size
        strip_metadata(path)
        precision = read_precision(path, profile.precision)
        quant = quantization_record(profile, calib, fp32_bytes, **applied)
        return replace(manifest, precision=precision, files=(file_entry(folder, MODEL_FILE),),
                       extra={**manifest.extra, "quantization": quant})

    def open(self, folder: Path, manifest: Manifest, threads: int | None = None) -> OnnxSession:
        return OnnxSession(folder / manifest.model_file, manifest.extra["runtime"], threads)


BACKEND = OnnxBackend()
