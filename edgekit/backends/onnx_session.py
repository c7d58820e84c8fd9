"""How to open an ONNX artifact: the one place that turns a manifest's runtime options into an onnxruntime
session. The host (validation, bench) and the device bundle (copied there as ``edgekit_session.py``) both use this
file, so it imports numpy, onnxruntime and edgekit.cpu only (in a bundle, the copy beside it)."""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__:  # edgekit.backends.onnx_session
    from edgekit.cpu import NOT_X86, UNKNOWN, VNNI, cpu_features, int8_dot_products, resolve_threads
else:  # a bundle's edgekit_session.py, beside its copy of edgekit/cpu.py
    from edgekit_cpu import NOT_X86, UNKNOWN, VNNI, cpu_features, int8_dot_products, resolve_threads

PROVIDER = "CPUExecutionProvider"
# onnxruntime's U8S8 kernels on x86 without VNNI (SSE4.1, AVX2, AVX-512 without VNNI) add pairs of products in
# saturating 16-bit lanes; this session option makes them use exact U8U8 kernels instead. It costs 2.4x on a
# VNNI CPU (EfficientNet-Lite0 int8, measured), where U8S8 is exact, so it is set only where it is needed.
PRECISE_INT8 = "session.x64quantprecision"


def int8_precision_mode(machine: str, flags: set[str] | frozenset[str] | None) -> tuple[bool, str]:
    """Whether to ask for exact U8U8 int8 kernels on this CPU, and why, from its architecture and flags."""
    kind = int8_dot_products(machine, flags)
    if kind == NOT_X86:
        return False, f"{machine}: int8 dot products are exact (no 16-bit saturation)"
    if kind == UNKNOWN:
        return True, "x86 CPU whose flags cannot be read: exact U8U8 int8 kernels, to be safe"
    if kind == VNNI:
        return False, "x86 with VNNI: U8S8 int8 kernels are exact"
    return True, "x86 without VNNI: exact U8U8 int8 kernels instead of the saturating U8S8 ones"


DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


class OnnxSession:
    def __init__(self, model_path: str | Path, runtime: dict, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        # intra-op threads carry the model's ops; the sequential executor does not use inter-op threads
        options.intra_op_num_threads = resolve_threads(runtime["threads"] if threads is None else threads)
        options.log_severity_level = 3
        self._precise, self._precise_why = int8_precision_mode(platform.machine(), cpu_features())
        options.add_session_config_entry(PRECISE_INT8, "1" if self._precise else "0")
        # onnxruntime 1.32's WeightBiasQuantization pass (on from the basic level) turns a float Conv / Gemm between
        # a DequantizeLinear and a QuantizeLinear (a layer keep_float left in float) into per-tensor int8 at load
        # time: EfficientNet-Lite0's mixed artifact ran at logits cosine 0.9957 with it, 0.9970 without. Older
        # onnxruntimes ignore the name.
        self._session = ort.InferenceSession(str(model_path), options, providers=[PROVIDER],
                                             disabled_optimizers=DISABLED_OPTIMIZERS)
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, inputs)))

    def effective(self) -> dict:
        """What the session reports it runs with. onnxruntime computes in the graph's own types (no hint)."""
        options = self._session.get_session_options()
        return {"precision": "the graph's types", "threads": options.intra_op_num_threads,
                "providers": self._session.get_providers(), "int8_kernels": self._precise_why,
                "disabled_optimizers": DISABLED_OPTIMIZERS, "note": None}


def open_session(model_path: str | Path, runtime: dict, threads: int | None = None) -> OnnxSession:
    return OnnxSession(model_path, runtime, threads)
