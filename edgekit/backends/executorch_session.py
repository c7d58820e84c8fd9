"""How to open an ExecuTorch artifact: the one place that turns a manifest's runtime options into loaded methods
of a .pte program. The host (validation, bench) and the device bundle (copied there as ``edgekit_session.py``)
both use this file, so it imports no edgekit but edgekit.cpu (in a bundle, the copy beside it).

It imports torch, unlike the other session modules, because executorch 1.5.1's Python runtime cannot run
without it: ``executorch.runtime`` imports torch itself, its extension links libtorch from the torch wheel, and
``Method.execute`` takes torch tensors only (numpy arrays are refused). torch is used here for nothing but
wrapping numpy arrays (``torch.from_numpy``, zero-copy) and unwrapping the outputs.

The export writes one method per batch size ("forward_b1", "forward_b8", ...): XNNPACK lowering of a dynamic
batch silently narrows its upper bound (to 15 for models with a convolution), so the batch is fixed per method.
"""
from __future__ import annotations

import sys
import types
import weakref
from pathlib import Path

import numpy as np
import torch

if __package__:  # edgekit.backends.executorch_session
    from edgekit.cpu import resolve_threads
else:  # a bundle's edgekit_session.py, beside its copy of edgekit/cpu.py
    from edgekit_cpu import resolve_threads


def _import_runtime() -> None:
    """Import the runtime without the compiler. executorch 1.5.1's pybindings import ``executorch.exir`` (the
    whole compiler: 6-8 s here) only for its ``_warnings`` module. A process that has not imported the compiler
    loads that one file under a bare package, then drops the bare package, so a later ``import executorch.exir``
    in the same process (an export) still runs the real one."""
    if "executorch.exir" in sys.modules:
        return
    import executorch

    bare = types.ModuleType("executorch.exir")
    bare.__path__ = [str(Path(executorch.__path__[0]) / "exir")]
    sys.modules["executorch.exir"] = bare
    try:
        import executorch.extension.pybindings.portable_lib  # noqa: F401
    finally:
        sys.modules.pop("executorch.exir", None)
        sys.modules.pop("executorch.exir._warnings", None)
        if getattr(executorch, "exir", None) is bare:
            del executorch.exir


_import_runtime()
from executorch.extension.pybindings import portable_lib  # noqa: E402
from executorch.runtime import Runtime  # noqa: E402

# ExecuTorch's ScalarType codes (TensorInfo.dtype()) -> numpy, for the warm-up inputs
SCALAR_TYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32,
                7: np.float64, 11: np.bool_}

# Sessions alive in this process. The threadpool XNNPACK runs on is one per process, and a loaded XNNPACK
# delegate keeps the pool it was loaded with: resetting the pool under a live method crashed (SIGSEGV) here.
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _use_threadpool(threads: int) -> str | None:
    """Size the process-wide threadpool before any method is loaded. While another session of this process
    still uses the pool it is left as it is (resetting it under a live method is unsafe); the reason is returned,
    and the session reports the count it really runs with."""
    current = portable_lib._threadpool_get_thread_count()
    if current == threads:
        return None
    if len(_LIVE):
        return (f"asked for {threads} threads; executorch has one threadpool per process and another open "
                f"session uses it with {current}: close that session first")
    portable_lib._unsafe_reset_threadpool(threads)
    return None


class ExecuTorchSession:
    """One loaded method per batch size (and length), from ``runtime["methods"]`` (method name -> batch size, or
    [batch size, length])."""

    def __init__(self, model_path: str | Path, runtime: dict, threads: int | None = None) -> None:
        self._note = _use_threadpool(resolve_threads(runtime["threads"] if threads is None else threads))
        self._program = Runtime.get().load_program(Path(model_path))
        # a method is for a batch size, or for [batch size, length] (a model with dynamic axes)
        self._methods = {(b, None) if isinstance(b, int) else tuple(b): self._program.load_method(name)
                         for name, b in runtime["methods"].items()}
        self._length_axes = {k: v[0] for k, v in runtime.get("length_axes", {}).items()}
        self._inputs: list[str] = list(runtime["inputs"])  # the methods' positional order
        self._outputs: list[str] = list(runtime["outputs"])
        _LIVE.add(self)
        for method in self._methods.values():  # XNNPACK sets up its kernels on the first call: not in timing
            meta = method.metadata
            method.execute([torch.from_numpy(np.zeros(tuple(info.sizes()), SCALAR_TYPES[info.dtype()]))
                            for info in map(meta.input_tensor_meta, range(meta.num_inputs()))])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(inputs.values())))
        length = next((inputs[k].shape[a] for k, a in self._length_axes.items() if k in inputs), None)
        method = self._methods.get((batch, length))
        if method is None:
            made = ", ".join(f"{b}" if n is None else f"{b} x length {n}" for b, n in sorted(self._methods))
            got = f"{batch}" if length is None else f"{batch} x length {length}"
            raise ValueError(f"this ExecuTorch program has methods for batch {made}, not {got}")
        args = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in self._inputs]
        # execute copies the outputs out of the method's planned memory, so the arrays stay valid
        return {name: value.numpy() for name, value in zip(self._outputs, method.execute(args))}

    def effective(self) -> dict:
        """The thread count is read back from the runtime's threadpool. The precision is the program's own:
        XNNPACK runs int8 where the graph was quantized and float32 elsewhere; ops outside the delegates run on
        ExecuTorch's portable float32 kernels."""
        return {"precision": "the program's types (XNNPACK: int8 where quantized, else float32)",
                "threads": portable_lib._threadpool_get_thread_count(),
                "methods": sorted(f"b{b}" if n is None else f"b{b}_l{n}" for b, n in self._methods),
                "note": self._note}


def open_session(model_path: str | Path, runtime: dict, threads: int | None = None) -> ExecuTorchSession:
    return ExecuTorchSession(model_path, runtime, threads)
