"""How to open a TFLite artifact: the one place that turns a manifest's runtime options into LiteRT signature
runners. The host (validation, bench) and the device bundle (copied there as ``edgekit_session.py``) both use this
file, so it imports numpy, ai-edge-litert and edgekit.cpu only (in a bundle, the copy beside it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

if __package__:  # edgekit.backends.tflite_session
    from edgekit.cpu import resolve_threads
else:  # a bundle's edgekit_session.py, beside its copy of edgekit/cpu.py
    from edgekit_cpu import resolve_threads


def quantized_io(details: dict) -> dict[str, tuple[float, int, type]]:
    """The tensors a full-integer model takes or gives as int8 / uint8 / int16 with a scale (e.g. ai-edge-quantizer's
    default static recipe, whose inputs and outputs are int8): name -> (scale, zero point, type). The caller's
    floats are quantized into them and their outputs dequantized, f = scale * (q - zero_point) as LiteRT's
    Tensor.QuantizationParams defines it; a tensor with scale 0 is not quantized (token ids)."""
    return {k: (float(d["quantization"][0]), int(d["quantization"][1]), d["dtype"]) for k, d in details.items()
            if d["quantization"][0] != 0 and np.issubdtype(d["dtype"], np.integer)}


class TfliteSession:
    """One runner per batch-size signature ("b1", "b8", ...; "b1_l16", ... per length for a model with dynamic
    axes): litert-torch cannot make a dynamic batch or length."""

    def __init__(self, model_path: str | Path, runtime: dict, threads: int | None = None) -> None:
        self._threads = resolve_threads(runtime["threads"] if threads is None else threads)
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=self._threads)
        # a signature is for a batch size, or for [batch size, length]
        self._runners = {(b, None) if isinstance(b, int) else tuple(b): self._interpreter.get_signature_runner(name)
                         for name, b in runtime["signatures"].items()}
        self._length_axes = {k: v[0] for k, v in runtime.get("length_axes", {}).items()}
        for runner in self._runners.values():  # the XNNPACK delegate is made on the first invoke: not in timing
            runner(**{k: np.zeros(d["shape"], d["dtype"]) for k, d in runner.get_input_details().items()})
        self._inputs = runtime["signature_inputs"]  # input name -> signature argument
        self._quantized = {key: (quantized_io(r.get_input_details()), quantized_io(r.get_output_details()))
                           for key, r in self._runners.items()}
        self._outputs = [(key, name) for name, key in runtime["signature_outputs"].items()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(inputs.values())))
        length = next((inputs[k].shape[a] for k, a in self._length_axes.items() if k in inputs), None)
        runner = self._runners.get((batch, length))
        if runner is None:
            made = ", ".join(f"{b}" if n is None else f"{b} x length {n}" for b, n in sorted(self._runners))
            got = f"{batch}" if length is None else f"{batch} x length {length}"
            raise ValueError(f"this TFLite model has signatures for batch {made}, not {got}")
        into, out_of = self._quantized[(batch, length)]
        feed = {}
        for name, value in inputs.items():
            arg = self._inputs[name]
            if arg in into and np.issubdtype(value.dtype, np.floating):
                scale, zero, kind = into[arg]
                value = np.clip(np.round(value / scale) + zero, np.iinfo(kind).min, np.iinfo(kind).max).astype(kind)
            feed[arg] = value
        result = runner(**feed)
        return {name: (np.float32(out_of[key][0]) * (result[key].astype(np.float32) - out_of[key][1])
                       if key in out_of else np.array(result[key])) for key, name in self._outputs}

    def effective(self) -> dict:
        """The interpreter does not report its thread count; this is the count it was created with. LiteRT's CPU
        kernels compute in float32 or in the model's integer types (fp16 weights are dequantized)."""
        return {"precision": "the model's types (fp16 weights dequantized to float32)", "threads": self._threads,
                "note": None}


def open_session(model_path: str | Path, runtime: dict, threads: int | None = None) -> TfliteSession:
    return TfliteSession(model_path, runtime, threads)
