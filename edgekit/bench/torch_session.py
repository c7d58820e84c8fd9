"""The original torch eager model as a bench row: every runtime's speed is also a ratio against it."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from edgekit.artifact import Manifest, Precision, TensorSpec
from edgekit.cpu import resolve_threads
from edgekit.runfolder import RunRecord
from edgekit.source import load_recorded


class TorchSession:
    def __init__(self, module: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...],
                 threads: int | None) -> None:
        self._module, self._inputs, self._outputs = module.eval(), input_names, output_names
        self._threads = resolve_threads(threads)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if torch.get_num_threads() != self._threads:  # process-wide in torch; changing it rebuilds the pool
            torch.set_num_threads(self._threads)
        with torch.inference_mode():
            result = self._module(*(torch.from_numpy(inputs[n]) for n in self._inputs))
        result = result if isinstance(result, (tuple, list)) else (result,)
        return {n: t.numpy() for n, t in zip(self._outputs, result)}

    def effective(self) -> dict:
        return {"precision": "float32", "threads": self._threads, "note": None}


def torch_row(record: RunRecord, allow_pickle: bool, inputs: dict[str, np.ndarray]
              ) -> tuple[Callable[..., TorchSession], Manifest, None, int]:
    spec = load_recorded(record, allow_pickle=allow_pickle)
    # eager torch takes any shape: every dimension is open (a model with dynamic axes also runs at other lengths)
    specs = tuple(TensorSpec(n, ("batch", *(f"dim{i}" for i in range(1, inputs[n].ndim))), inputs[n].dtype.name)
                  for n in spec.input_names)
    manifest = Manifest(record.source, "torch", "torch", "NCHW", specs, (), Precision("fp32", "float32", "float32"), (),
                        {"torch": torch.__version__})
    size = sum(t.numel() * t.element_size() for t in spec.module.state_dict().values())
    return (lambda threads=None: TorchSession(spec.module, spec.input_names, spec.output_names, threads),
            manifest, None, size)
