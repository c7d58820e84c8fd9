"""How to open an OpenVINO artifact: the one place that turns a manifest's runtime options into a compiled model.

The host (validation, bench) and the device bundle (copied there as ``edgekit_session.py``) both use this file, so
it imports numpy, openvino and edgekit.cpu only (in a bundle, the copy beside it). The compute precision is chosen
here, on the machine that runs the model, because that is where the CPU's capabilities are known: the CPU plugin
computes in bf16 on CPUs with bf16 unless told otherwise, and takes an f16 hint on a CPU without native fp16 as
leave to run bf16. We never let it pick a precision below the one asked for."""
from __future__ import annotations

import platform
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import openvino as ov

if __package__:  # edgekit.backends.openvino_session
    from edgekit.cpu import NO_VNNI, NOT_X86, UNKNOWN, cpu_features, int8_dot_products, resolve_threads
else:  # a bundle's edgekit_session.py, beside its copy of edgekit/cpu.py
    from edgekit_cpu import NO_VNNI, NOT_X86, UNKNOWN, cpu_features, int8_dot_products, resolve_threads

# the CPU plugin's activation group size for int8-dynamic when none was chosen (the profile's 0 without calibration
# data, and every manifest made before edgekit chose one)
DEFAULT_GROUP_SIZE = 32
# the INFERENCE_PRECISION_HINT for each edgekit precision; int8 models run their float layers in f32
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32", "int8-dynamic": "f32"}
# the OPTIMIZATION_CAPABILITIES entry a device lists when it computes in that type natively
NATIVE = {"f16": "FP16", "bf16": "BF16"}
TYPE_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
_CORE: ov.Core | None = None


def core() -> ov.Core:
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def compute_hint(precision: str, capabilities: Iterable[str]) -> tuple[str, str | None]:
    """The hint to compile with for ``precision`` on a device with ``capabilities``, and a note when it is not
    the precision asked for. Never lower than asked: without native f16/bf16 compute the model runs in f32."""
    want = HINTS[precision]
    needed = NATIVE.get(want)
    if needed is None or needed in set(capabilities):
        return want, None
    return "f32", (f"{precision} asked for, but this device has no native {needed} compute: it computes in "
                   f"float32" + (" with the fp16 weights" if precision == "fp16" else ""))


def exact_int8_products(machine: str | None = None, flags: Collection[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU's int8 convolutions add u8 x s8 products exactly, and why. x86 without VNNI adds pairs of
    them in saturating 16-bit lanes (255 * 127 * 2 > 32767), which NNCF's overflow fix (7-bit weights in the
    first layer) exists for; VNNI and arm64's dot products accumulate in 32 bits. Defaults: this machine."""
    machine = (machine or platform.machine()).lower()
    kind = int8_dot_products(machine, cpu_features() if flags is None else flags)
    if kind == NOT_X86:
        return True, f"{machine}: int8 dot products accumulate in 32 bits"
    if kind == UNKNOWN:
        return False, "x86 CPU whose flags cannot be read: assumed without VNNI"
    if kind == NO_VNNI:
        return False, "x86 without VNNI: pairs of u8 x s8 products saturate at 16 bits"
    return True, "x86 with VNNI: int8 dot products accumulate in 32 bits"


def device_capabilities(device: str) -> list[str]:
    """What the device computes natively; [] when it does not say (AUTO, a missing device): then f32 is chosen."""
    try:
        return list(core().get_property(device.split(".")[0], "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        return []


def compile_config(runtime: dict, threads: int | None = None,
                   **overrides: str) -> tuple[dict[str, str], str | None]:
    """The properties to compile with: the manifest's fixed ones, the chosen precision hint, the thread count
    (``threads`` overrides the manifest's, e.g. 1 for single-thread latency), then ``overrides``."""
    hint, note = compute_hint(runtime["precision"], device_capabilities(runtime["device"]))
    config = {**runtime.get("config", {}), "INFERENCE_PRECISION_HINT": hint,
              "INFERENCE_NUM_THREADS": str(resolve_threads(runtime["threads"] if threads is None else threads)),
              **overrides}
    return config, note


def batch_one_shapes(model: ov.Model) -> dict[str, tuple[int, ...]] | None:
    """Every input's shape at batch 1 when the batch is the only dynamic dimension (edgekit's IRs), else None."""
    shapes = {}
    for port in model.inputs:
        dims = port.get_partial_shape()
        if dims.rank.is_dynamic or len(dims) == 0 or dims[0].is_static or \
                not all(d.is_static for d in list(dims)[1:]):
            return None
        shapes[port.get_any_name()] = (1, *(d.get_length() for d in list(dims)[1:]))
    return shapes


class _Request:
    """One infer request, and the caller's arrays bound zero-copy to its inputs: passing the same arrays again
    (as a timing loop does) binds nothing, passing others binds those. Arrays that cannot be shared (another dtype,
    not C-contiguous, read-only) are copied in on every call."""

    def __init__(self, compiled: ov.CompiledModel) -> None:
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._inputs = {p.get_any_name(): (p, np.dtype(p.get_element_type().to_dtype())) for p in compiled.inputs}
        self._outputs = [o.get_any_name() for o in compiled.outputs]
        self._bound: dict[str, np.ndarray] = {}  # held, so an identical id is the identical array

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in inputs.items():
            if self._bound.get(name) is array:
                continue
            if name not in self._inputs:
                raise ValueError(f"the model has no input {name!r} (it has {', '.join(self._inputs)})")
            port, dtype = self._inputs[name]
            shared = array.dtype == dtype and array.flags.c_contiguous and array.flags.writeable
            self._request.set_tensor(port, ov.Tensor(array if shared else np.ascontiguousarray(array, dtype),
                                                     shared_memory=shared))
            if shared:
                self._bound[name] = array
            else:
                self._bound.pop(name, None)
        result = self._request.infer()  # share_outputs=False: copies, since the request reuses its output buffers
        return dict(zip(self._outputs, result.to_tuple()))


def _property(compiled: ov.CompiledModel, name: str) -> str:
    try:
        value = compiled.get_property(name)
    except RuntimeError:  # AUTO / MULTI do not report every property
        return "not reported"
    return value.get_type_name() if isinstance(value, ov.Type) else str(value)


class OpenVinoSession:
    """A batch-1 call runs on the IR compiled for batch 1 (made when the session opens), as a batch-1 deployment
    compiles it and as benchmark_app times it: the CPU plugin runs a dynamic-batch compile 3-12 % slower at the
    same batch (EfficientNet-Lite0, measured). Other batches run on the dynamic-batch compile, made on first use."""

    def __init__(self, model: str | Path | ov.Model, runtime: dict, threads: int | None = None) -> None:
        self._model = model if isinstance(model, ov.Model) else core().read_model(str(model))
        self._device = runtime["device"]
        self.config, self.note = compile_config(runtime, threads)
        exact, why = exact_int8_products() if runtime.get("exact_int8_products") else (True, "")
        if not exact:
            # the IR was quantized on a CPU kind whose int8 products are exact, without NNCF's overflow fix
            warning = (f"this IR keeps 8-bit weights in its first layer, made for CPUs with exact int8 products; "
                       f"here ({why}) they may saturate: quantize on this CPU kind")
            self.note = f"{self.note}; {warning}" if self.note else warning
        self._dynamic: _Request | None = None
        self._static: _Request | None = None
        self._one = batch_one_shapes(self._model)
        if self._one is not None:
            static = self._model.clone()
            static.reshape({name: ov.PartialShape(list(shape)) for name, shape in self._one.items()})
            self._static = _Request(core().compile_model(static, self._device, self.config))

    def _dynamic_request(self) -> _Request:
        if self._dynamic is None:
            self._dynamic = _Request(core().compile_model(self._model, self._device, self.config))
        return self._dynamic

    @property
    def compiled(self) -> ov.CompiledModel:
        """The compiled model a batch-1 call runs on."""
        return (self._static or self._dynamic_request()).compiled

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._static is not None and all(k in inputs and inputs[k].shape == s for k, s in self._one.items()):
            return self._static.run(inputs)
        return self._dynamic_request().run(inputs)

    def effective(self) -> dict:
        """What the compiled model reports it runs with (read back, not what was passed)."""
        hint = _property(self.compiled, "INFERENCE_PRECISION_HINT")
        threads = _property(self.compiled, "INFERENCE_NUM_THREADS")
        return {"precision": TYPE_NAMES.get(hint, hint), "threads": int(threads) if threads.isdigit() else threads,
                "note": self.note}


def open_session(model_path: str | Path, runtime: dict, threads: int | None = None) -> OpenVinoSession:
    return OpenVinoSession(model_path, runtime, threads)
