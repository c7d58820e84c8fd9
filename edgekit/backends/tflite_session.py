"""How to open a TFLite artifact: the one place that turns a manifest's runtime options into LiteRT signature
runners. The host (validation, bench) and the device bundle (copied there as ``edgekit_session.py``) both use this
file, so it imports numpy and ai-edge-litert only."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def resolve_threads(threads: int) -> int:
    """A profile's thread count; 0 means all cores."""
    return threads if threads > 0 else (os.cpu_count() or 1)


class TfliteSession:
    """One runner per batch-size signature ("b1", "b8", ...): litert-torch cannot make a dynamic batch."""

    def __init__(self, model_path: str | Path, runtime: dict, threads: int | None = None) -> None:
        self._threads = resolve_threads(runtime["threads"] if threads is None else threads)
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=self._threads)
        self._runners = {int(b): self._interpreter.get_signature_runner(name)
                         for name, b in runtime["signatures"].items()}
        for runner in self._runners.values():  # the XNNPACK delegate is made on the first invoke: not in timing
            runner(**{k: np.zeros(d["shape"], d["dtype"]) for k, d in runner.get_input_details().items()})
        self._inputs = runtime["signature_inputs"]  # input name -> signature argument
        self._outputs = [(key, name) for name, key in runtime["signature_outputs"].items()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(inputs.values())))
        if batch not in self._runners:
            raise ValueError(f"this TFLite model has signatures for batch {sorted(self._runners)}, not {batch}")
        result = self._runners[batch](**{self._inputs[name]: value for name, value in inputs.items()})
        return {name: np.array(result[key]) for key, name in self._outputs}

    def effective(self) -> dict:
        """The interpreter does not report its thread count; this is the count it was created with. LiteRT's CPU
        kernels compute in float32 or in the model's integer types (fp16 weights are dequantized)."""
        return {"precision": "the model's types (fp16 weights dequantized to float32)", "threads": self._threads,
                "note": None}


def open_session(model_path: str | Path, runtime: dict, threads: int | None = None) -> TfliteSession:
    return TfliteSession(model_path, runtime, threads)
