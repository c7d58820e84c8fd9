"""How to open an ONNX artifact: the one place that turns a manifest's runtime options into an onnxruntime
session. The host (validation, bench) and the device bundle (copied there as ``edgekit_session.py``) both use this
file, so it imports numpy and onnxruntime only."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

PROVIDER = "CPUExecutionProvider"


def resolve_threads(threads: int) -> int:
    """A profile's thread count; 0 means all cores."""
    return threads if threads > 0 else (os.cpu_count() or 1)


class OnnxSession:
    def __init__(self, model_path: str | Path, runtime: dict, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        # intra-op threads carry the model's ops; the sequential executor does not use inter-op threads
        options.intra_op_num_threads = resolve_threads(runtime["threads"] if threads is None else threads)
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), options, providers=[PROVIDER])
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, inputs)))

    def effective(self) -> dict:
        """What the session reports it runs with. onnxruntime computes in the graph's own types (no hint)."""
        options = self._session.get_session_options()
        return {"precision": "the graph's types", "threads": options.intra_op_num_threads,
                "providers": self._session.get_providers(), "note": None}


def open_session(model_path: str | Path, runtime: dict, threads: int | None = None) -> OnnxSession:
    return OnnxSession(model_path, runtime, threads)
