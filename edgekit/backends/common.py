"""What several backends share and no runtime owns: torch.export shapes for a dynamic batch, example resizing,
package versions, thread counts, precision names, the manifest's quantization record (and a stock peer's), the
conversion cache, and the gate check a quantizer's own search judges a choice by."""
from __future__ import annotations

import inspect
import weakref
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch

    from edgekit.artifact import FileEntry, Manifest, Precision
    from edgekit.config import Gates
    from edgekit.data.calib import CalibrationData
    from edgekit.spec import ModelSpec

MAX_BATCH = 4096


def batch_dynamic_shapes(spec: ModelSpec) -> tuple[dict[int, torch.export.Dim], ...]:
    """Dim 0 of every input is one shared dynamic batch (the example inputs should have batch >= 2), and the
    spec's dynamic axes, their range inferred by torch.export (a position table of 512 caps a sentence encoder at
    512), which fails if the model pins them."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    axes = spec.length_axes()
    shapes = tuple({0: batch, **{a: torch.export.Dim.DYNAMIC for a in axes.get(i, ())}}
                   for i in range(len(spec.example_inputs)))
    # a forward(*inputs) (edgekit's FlatOutputs wrapper) takes its inputs as one packed argument
    params = inspect.signature(spec.module.forward).parameters.values()
    return (shapes,) if [p.kind for p in params] == [inspect.Parameter.VAR_POSITIONAL] else shapes


def fixed_shapes(batch_sizes: tuple[int, ...], spec: ModelSpec) -> list[tuple[int, int | None]]:
    """(batch, length) for each signature / method of a runtime with fixed shapes: every batch size, and for a
    model with dynamic axes every one of its lengths (None: the model has none)."""
    return [(b, n) for b in sorted(set(batch_sizes)) for n in (spec.lengths or (None,))]


def resized_example(t: torch.Tensor, size: int, axes: tuple[int, ...] = (), length: int | None = None
                    ) -> torch.Tensor:
    """An example input resized to ``size`` along the batch (repeating it if it is smaller) and cut to
    ``length`` along its dynamic ``axes``."""
    reps = -(-size // t.shape[0])
    t = t.repeat(reps, *([1] * (t.dim() - 1)))[:size]
    for axis in axes:
        t = t.narrow(axis, 0, length)
    return t.contiguous()


def versions(*packages: str) -> dict[str, str]:
    import torch

    found = {"torch": torch.__version__}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# Normalized names for the precision a runtime computes in, whatever each runtime calls it.
PRECISION_NAMES = {"f32": "float32", "float32": "float32", "f16": "float16", "float16": "float16",
                   "bf16": "bfloat16", "bfloat16": "bfloat16", "i8": "int8", "u8": "int8", "int8": "int8"}
DECLARED_COMPUTE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8", "int8-dynamic": "int8"}


def quantization_record(profile, calib, fp32_bytes: int, **applied) -> dict:
    """What a quantize step did, for the manifest: mode, calibration data, the fp32 size before, and what the
    backend reports it applied (``applied``: only options that reached the quantizer are recorded). Dynamic int8
    is given calibration data when there is any, and records it only when the backend says it used it
    (``calibrated=True``) or a mixed-precision search judged on it."""
    used = applied.pop("calibrated", False) or profile.precision != "int8-dynamic" or \
        profile.quantization.mixed_precision
    calib = calib if used else None
    return {"mode": profile.precision, "calibration": calib.origin if calib else None,
            "calibration_samples": len(calib) if calib else 0, "keep_float": list(profile.quantization.keep_float),
            "fp32_bytes": fp32_bytes, **applied}


STOCK_SUFFIX = "stock-int8"  # a stock peer's target name: "<backend>-stock-int8"


def stock_manifest(manifest: Manifest, folder: Path, tool: str, settings: dict, calib: CalibrationData,
                   precision: Precision, files: tuple[FileEntry, ...], **extra: Any) -> Manifest:
    """A stock peer's manifest, written into its ``folder`` beside its model ``files``: the fp32 artifact's
    ``manifest`` with the peer's precision (read back) and files, and a quantization record naming the runtime's
    own quantizer (``tool``), run as its documentation says with its defaults (``settings``: every argument as
    passed), on the same calibration data as edgekit's int8. ``extra``: other manifest entries to replace."""
    from dataclasses import replace

    from edgekit.fsutil import write_text
    from edgekit.runfolder import MANIFEST_FILE

    record = {"mode": "int8", "tool": f"stock {tool} defaults", "settings": settings, "calibration": calib.origin,
              "calibration_samples": len(calib), "fp32_bytes": sum(f.bytes for f in manifest.files)}
    peer = replace(manifest, target=f"{manifest.backend}-{STOCK_SUFFIX}", precision=precision, files=files,
                   extra={**manifest.extra, **extra, "quantization": record})
    write_text(folder / MANIFEST_FILE, peer.to_json())
    return peer


def storage_type(weight_elements: Counter[str]) -> str:
    """The type that holds most weight elements ("none" for a model without weights)."""
    return weight_elements.most_common(1)[0][0] if weight_elements else "none"


class ConversionCache:
    """Recent conversions of a module, so a run's int8 target reuses the float conversion its fp32 target of the
    same backend already made (converting is the slow part of an export). Entries die with their module."""

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._items: dict[tuple, tuple[weakref.ref, Any]] = {}

    def get(self, module: object, key: tuple, make: Callable[[], Any]) -> Any:
        slot = (id(module), key)
        hit = self._items.get(slot)
        if hit is not None and hit[0]() is module:
            return hit[1]
        value = make()
        self._items[slot] = (weakref.ref(module), value)
        while len(self._items) > self._size:
            self._items.pop(next(iter(self._items)))
        return value


def keeps_gates(reference: dict[str, np.ndarray], got: dict[str, np.ndarray], gates: Gates) -> tuple[bool, dict]:
    """Whether every output keeps its profile gates within warn on the same samples, and each output's cosine and
    SQNR: how a quantizer's own search judges a choice on calibration data."""
    from edgekit.validate.gates import Status, check
    from edgekit.validate.metrics import output_stats

    ok, measured = True, {}
    for name, want in reference.items():
        stats = output_stats(name, want, got[name])
        measured[name] = {"cosine": round(stats.cosine, 6), "sqnr_db": round(stats.sqnr_db, 2)}
        for metric, gate in gates.for_output(name).items():
            value = stats.metric(metric)
            ok &= value is None or check(name, metric, value, gate).status == Status.PASS
    return ok, measured
