"""How to open an OpenVINO artifact: the one place that turns a manifest's runtime options into a compiled model.

The host (validation, bench) and the device bundle (copied there as ``edgekit_session.py``) both use this file, so
it imports numpy and openvino only. The compute precision is chosen here, on the machine that runs the model,
because that is where the CPU's capabilities are known: the CPU plugin computes in bf16 on CPUs with bf16 unless
told otherwise, and takes an f16 hint on a CPU without native fp16 as leave to run bf16. We never let it pick a
precision below the one asked for."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import openvino as ov

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


def resolve_threads(threads: int) -> int:
    """A profile's thread count; 0 means all cores."""
    return threads if threads > 0 else (os.cpu_count() or 1)


def device_capabilities(device: str) -> list[str]:
    """What the device computes natively; [] when it does not say (AUTO, a missing device): then f32 is chosen."""
    try:
        return list(core().get_property(device.split(".")[0], "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        return []


def compile_config(runtime: dict, threads: int | None = None, **overrides: str) -> tuple[dict[str, str], str | None]:
    """The properties to compile with: the manifest's fixed ones, the chosen precision hint, the thread count
    (``threads`` overrides the manifest's, e.g. 1 for single-thread latency), then ``overrides``."""
    hint, note = compute_hint(runtime["precision"], device_capabilities(runtime["device"]))
    config = {**runtime.get("config", {}), "INFERENCE_PRECISION_HINT": hint,
              "INFERENCE_NUM_THREADS": str(resolve_threads(runtime["threads"] if threads is None else threads)),
              **overrides}
    return config, note


def compile_model(model_path: str | Path, runtime: dict, threads: int | None = None,
                  **overrides: str) -> tuple[ov.CompiledModel, dict[str, str], str | None]:
    config, note = compile_config(runtime, threads, **overrides)
    return core().compile_model(str(model_path), runtime["device"], config), config, note


def _property(compiled: ov.CompiledModel, name: str) -> str:
    try:
        value = compiled.get_property(name)
    except RuntimeError:  # AUTO / MULTI do not report every property
        return "not reported"
    return value.get_type_name() if isinstance(value, ov.Type) else str(value)


class OpenVinoSession:
    def __init__(self, model_path: str | Path, runtime: dict, threads: int | None = None) -> None:
        self.compiled, self.config, self.note = compile_model(model_path, runtime, threads)
        self._request = self.compiled.create_infer_request()
        self._outputs = [(o, o.get_any_name()) for o in self.compiled.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(inputs, share_inputs=True)  # no copy of the input; outputs are copied below
        return {name: np.array(result[port]) for port, name in self._outputs}  # copies: the buffers are reused

    def effective(self) -> dict:
        """What the compiled model reports it runs with (read back, not what was passed)."""
        hint = _property(self.compiled, "INFERENCE_PRECISION_HINT")
        threads = _property(self.compiled, "INFERENCE_NUM_THREADS")
        return {"precision": TYPE_NAMES.get(hint, hint), "threads": int(threads) if threads.isdigit() else threads,
                "note": self.note}


def open_session(model_path: str | Path, runtime: dict, threads: int | None = None) -> OpenVinoSession:
    return OpenVinoSession(model_path, runtime, threads)
