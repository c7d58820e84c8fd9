"""OpenVINO IR: torch.export -> ov.convert_model -> ov.save_model (.xml + .bin), compiled on the profile's device.

Precision is explicit. On CPUs with bf16 the CPU plugin computes in bf16 unless INFERENCE_PRECISION_HINT says
otherwise, and save_model stores fp16 weights unless compress_to_fp16=False: a profile that leaves either
default in force gets a warning, and the manifest says what the compiled model really runs in."""
from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import openvino as ov

from edgekit.artifact import Manifest, Precision, TensorSpec, file_entry
from edgekit.backends.common import (
    DECLARED_COMPUTE,
    PRECISION_NAMES,
    ConversionCache,
    batch_dynamic_shapes,
    quantization_record,
    storage_type,
    versions,
)
from edgekit.bench.measurement import Throughput
from edgekit.config import QUANTIZED_PRECISIONS, TargetProfile
from edgekit.errors import EdgekitError

if TYPE_CHECKING:  # export-side types: opening an artifact (bench workers) never imports torch
    from edgekit.data.calib import CalibrationData
    from edgekit.spec import ModelSpec

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
_SKIP_LAYERS = {"Const", "Input", "Output", "Parameter", "Result"}
_CORE: ov.Core | None = None


def core() -> ov.Core:
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def _compress_to_fp16(profile: TargetProfile) -> bool:
    option = profile.runtime.compress_weights_to_fp16
    return True if option is None else option  # None: OpenVINO's own default


def compile_config(profile: TargetProfile) -> dict[str, str]:
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if profile.precision == "int8-dynamic":  # int8 weights; the CPU plugin quantizes activations per group
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = "32"
    if profile.runtime.precision_hint is not None:
        config["INFERENCE_PRECISION_HINT"] = profile.runtime.precision_hint
    if profile.runtime.threads > 0:
        config["INFERENCE_NUM_THREADS"] = str(profile.runtime.threads)
    return config


def device_missing(device: str) -> str | None:
    """Why ``device`` cannot be used on this host, or None when it can."""
    available = core().available_devices
    if device.split(":")[0] in ("AUTO", "MULTI", "HETERO") or device.split(".")[0] in available:
        return None
    return f"OpenVINO device {device!r} is not available here (available: {', '.join(available)})"


def compile_model(path: Path, profile: TargetProfile) -> ov.CompiledModel:
    missing = device_missing(profile.runtime.device)
    if missing:
        raise EdgekitError(missing)
    return core().compile_model(str(path), profile.runtime.device, compile_config(profile))


def _type_name(t: ov.Type) -> str:
    return PRECISION_NAMES.get(t.get_type_name(), t.get_type_name())


def _weight_elements(model_path: Path) -> Counter[str]:
    weights: Counter[str] = Counter()
    for op in core().read_model(str(model_path)).get_ops():
        if op.get_type_name() == "Constant" and (op.get_element_type().is_real()
                                                  or op.get_element_type() in (ov.Type.i8, ov.Type.u8)):
            size = int(np.prod(list(op.get_shape()), dtype=np.int64))
            if size > 1:  # scalars are scales and epsilons, not weights
                weights[_type_name(op.get_element_type())] += size
    return weights


def unread_precision(model_path: Path, profile: TargetProfile, why: str) -> Precision:
    """For a device this host lacks: the weights are known, the compute precision is not."""
    weights = _weight_elements(model_path)
    return Precision(profile.precision, "unknown", storage_type(weights),
                     {"weight_elements": dict(weights), "device": profile.runtime.device},
                     (f"{why}: compute precision not read back",))


def read_precision(model_path: Path, compiled: ov.CompiledModel, profile: TargetProfile) -> Precision:
    """Read back the compute precision from the compiled model's execution graph and the weight storage type
    from the saved IR's constants."""
    weights = _weight_elements(model_path)
    executed: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) not in _SKIP_LAYERS:
            # outputPrecisions, not runtimePrecision: the latter names the weight type on fp16-weight layers
            for name in info["outputPrecisions"].astype(str).split(","):
                executed[PRECISION_NAMES.get(name.strip().lower(), name.strip().lower())] += 1
    try:
        hint = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except RuntimeError:  # AUTO / MULTI do not report it; the executed graph still does
        hint = "not reported"
    floats = {k: v for k, v in executed.items() if k in ("float32", "float16", "bfloat16")}
    compute = "int8" if executed.get("int8", 0) > sum(floats.values()) / 2 else max(floats, key=floats.get,
                                                                                     default="unknown")
    weight_type = storage_type(weights)
    notes = []
    if profile.runtime.precision_hint is None:
        notes.append(f"INFERENCE_PRECISION_HINT left at the runtime default (here {hint}; CPUs with bf16 "
                     "compute in bf16): set precision_hint")
    if profile.runtime.compress_weights_to_fp16 is None and profile.precision == "fp32":
        notes.append("compress_weights_to_fp16 left at OpenVINO's default (fp16 weights): set it to false")
    if compute != DECLARED_COMPUTE[profile.precision] and profile.precision in ("fp32", "fp16"):
        notes.append(f"asked for {profile.precision}, the runtime computes in {compute}")
    return Precision(profile.precision, compute, weight_type,
                     {"inference_precision_hint": hint, "executed_layer_precisions": dict(executed),
                      "weight_elements": dict(weights), "device": profile.runtime.device,
                      "execution_devices": _execution_devices(compiled),
                      "compile_config": compile_config(profile)}, tuple(notes))


def _execution_devices(compiled: ov.CompiledModel) -> list[str]:
    try:
        return list(compiled.get_property("EXECUTION_DEVICES"))
    except RuntimeError:
        return []


def _specs(ports) -> tuple[TensorSpec, ...]:
    out = []
    for port in ports:
        dims = tuple(d.get_length() if d.is_static else "batch" if i == 0 else "?"
                     for i, d in enumerate(port.get_partial_shape()))
        out.append(TensorSpec(port.get_any_name(), dims, np.dtype(port.get_element_type().to_dtype()).name))
    return tuple(out)


class _Request:
    """One infer request, and the caller's arrays bound zero-copy to its inputs: passing the same arrays again
    (as a timing loop does) binds nothing, passing others binds those. Arrays that cannot be shared (another dtype,
    not C-contiguous, read-only) are copied in on every call."""

    def __init__(self, compiled: ov.CompiledModel) -> None:
        self._request = compiled.create_infer_request()
        self._inputs = {p.get_any_name(): (p, np.dtype(p.get_element_type().to_dtype())) for p in compiled.inputs}
        self._outputs = [o.get_any_name() for o in compiled.outputs]
        self._bound: dict[str, np.ndarray] = {}  # held, so an identical id is the identical array

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in inputs.items():
            if self._bound.get(name) is not array:
                if name not in self._inputs:
                    raise EdgekitError(f"the model has no input {name!r} (it has {', '.join(self._inputs)})")
                port, dtype = self._inputs[name]
                shared = array.dtype == dtype and array.flags.c_contiguous and array.flags.writeable
                self._request.set_tensor(port, ov.Tensor(array if shared else np.ascontiguousarray(array, dtype),
                                                         shared_memory=shared))
                if shared:
                    self._bound[name] = array
                else:
                    self._bound.pop(name, None)
        result = self._request.infer()  # share_outputs=False: copies, the request reuses its output buffers
        return dict(zip(self._outputs, result.to_tuple()))


def _batch_one(model: ov.Model) -> dict[str, tuple[int, ...]] | None:
    """Every input's shape at batch 1, when the batch is the only dynamic dimension (as in edgekit's IRs); else
    None."""
    shapes = {}
    for port in model.inputs:
        dims = port.get_partial_shape()
        if dims.rank.is_dynamic or len(dims) == 0 or dims[0].is_static or not all(d.is_static for d in list(dims)[1:]):
            return None
        shapes[port.get_any_name()] = (1, *(d.get_length() for d in list(dims)[1:]))
    return shapes


class OpenVinoSession:
    """A batch-1 call runs on the IR compiled for batch 1 (when the session opens), as a batch-1 deployment compiles
    it and as benchmark_app times it: the CPU plugin runs a dynamic-batch compile measurably slower at the same batch
    (EfficientNet-Lite0: 3-5 %). Other batches run on the dynamic-batch compile, made on first use."""

    def __init__(self, model: ov.Model, device: str, config: dict[str, str]) -> None:
        self._model, self._device, self._config = model, device, config
        self._dynamic: _Request | None = None
        self._one = _batch_one(model)
        self._static = None
        if self._one is not None:
            static = model.clone()
            static.reshape({name: ov.PartialShape(list(shape)) for name, shape in self._one.items()})
            self._static = _Request(core().compile_model(static, device, config))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._static is not None and all(k in inputs and inputs[k].shape == s for k, s in self._one.items()):
            return self._static.run(inputs)
        if self._dynamic is None:
            self._dynamic = _Request(core().compile_model(self._model, self._device, self._config))
        return self._dynamic.run(inputs)


_CONVERTED = ConversionCache()


def _convert(spec: ModelSpec) -> ov.Model:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

        program = torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=batch_dynamic_shapes(spec))
        return ov.convert_model(program)


class OpenVinoBackend:
    name = "openvino"
    extra = "openvino"
    precisions = ("fp32", "fp16", "int8", "int8-dynamic")

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        if profile.precision not in self.precisions:
            raise EdgekitError(f"{profile.name}: the openvino backend cannot make {profile.precision}")
        if profile.runtime.layout != "NCHW":
            raise EdgekitError(f"{profile.name}: the openvino backend keeps the model's NCHW layout")
        model = _CONVERTED.get(spec.module, (), lambda: _convert(spec)).clone()
        # convert_model leaves every input dimension dynamic; pin all but the batch, so a wrong shape is refused
        model.reshape({port: ov.PartialShape([-1, *t.shape[1:]]) for port, t in zip(model.inputs,
                                                                                      spec.example_inputs)})
        for port, name in zip(model.inputs, spec.input_names):
            port.get_tensor().set_names({name})
        for port, name in zip(model.outputs, spec.output_names):
            port.get_tensor().set_names({name})
        quantized = profile.precision in QUANTIZED_PRECISIONS
        # int8 starts from float32 weights; NNCF stores its own int8 weights
        ov.save_model(model, str(folder / MODEL_FILE),
                      compress_to_fp16=False if quantized else _compress_to_fp16(profile))
        return self._describe(folder, profile, source, {})

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        from edgekit.backends import openvino_quant

        path = folder / MODEL_FILE
        fp32_bytes = sum(f.bytes for f in manifest.files)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, how = openvino_quant.quantize(core().read_model(str(path)), profile.precision,
                                                 profile.quantization, calib)
        # read_model memory-maps model.bin: writing over it in place would crash (SIGBUS) the process
        staged = folder / "quantized.xml"
        ov.save_model(model, str(staged), compress_to_fp16=False)
        del model
        os.replace(staged, path)
        os.replace(staged.with_suffix(".bin"), folder / WEIGHTS_FILE)
        quant = quantization_record(profile, calib, fp32_bytes, **how)
        return self._describe(folder, profile, source=manifest.source, extra={"quantization": quant})

    def _describe(self, folder: Path, profile: TargetProfile, source: str, extra: dict) -> Manifest:
        missing = device_missing(profile.runtime.device)
        if missing:  # the IR is still made for the device; validation then fails at LOAD, saying why
            precision = unread_precision(folder / MODEL_FILE, profile, missing)
            ports = core().read_model(str(folder / MODEL_FILE))
        else:
            ports = compile_model(folder / MODEL_FILE, profile)
            precision = read_precision(folder / MODEL_FILE, ports, profile)
        return Manifest(source, profile.name, self.name, "NCHW", _specs(ports.inputs), _specs(ports.outputs),
                        precision, (file_entry(folder, MODEL_FILE), file_entry(folder, WEIGHTS_FILE)),
                        {**versions("openvino"), "openvino_build": ov.get_version()}, None,
                        {"device": profile.runtime.device, "compile_config": compile_config(profile),
                         "compress_to_fp16": _compress_to_fp16(profile), **extra})

    def open(self, folder: Path, manifest: Manifest, profile: TargetProfile) -> OpenVinoSession:
        missing = device_missing(profile.runtime.device)
        if missing:
            raise EdgekitError(missing)
        model = core().read_model(str(folder / manifest.model_file))
        return OpenVinoSession(model, profile.runtime.device, compile_config(profile))

    def throughput(self, folder: Path, manifest: Manifest, profile: TargetProfile, one: dict[str, np.ndarray],
                   seconds: float) -> Throughput:
        """As benchmark_app does it: the THROUGHPUT hint (CPU streams) and an async queue of the plugin's optimal
        number of requests, all kept busy for ``seconds``."""
        missing = device_missing(profile.runtime.device)
        if missing:
            raise EdgekitError(missing)
        config = {**compile_config(profile), "PERFORMANCE_HINT": "THROUGHPUT"}
        compiled = core().compile_model(str(folder / manifest.model_file), profile.runtime.device, config)
        requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        queue = ov.AsyncInferQueue(compiled, requests)
        for _ in range(2 * requests):  # warm-up
            queue.start_async(one)
        queue.wait_all()
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            queue.start_async(one)  # blocks while every request is busy
            done += 1
        queue.wait_all()
        elapsed = time.perf_counter() - start
        streams = compiled.get_property("NUM_STREAMS")
        return Throughput(f"OpenVINO async queue, {requests} requests, THROUGHPUT hint ({streams} streams)",
                          int(requests), done, elapsed)


BACKEND = OpenVinoBackend()
