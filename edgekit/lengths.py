"""Dynamic axes beyond the batch (a sentence's length): what run.json and manifests record of them, and the
reference's inputs cut to each other length with torch's outputs on them. No torch: workers read these arrays."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from edgekit.artifact import Manifest, TensorSpec

if TYPE_CHECKING:
    from edgekit.spec import ModelSpec

LENGTH_PREFIX = "length"  # reference.npz keys "length16:input:NAME", "length16:output:NAME"
AT = "@"  # an output at another length is named "NAME@16" in validation


def arrays_at_lengths(z, kind: str) -> dict[int, dict[str, np.ndarray]]:
    """The ``kind`` ("input" / "output") arrays of every other length in an open reference.npz (or its arrays)."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for key in (z.files if hasattr(z, "files") else list(z)):
        head, _, rest = key.partition(":")
        if head.startswith(LENGTH_PREFIX) and head[len(LENGTH_PREFIX):].isdigit() and rest.startswith(kind + ":"):
            found.setdefault(int(head[len(LENGTH_PREFIX):]), {})[rest[len(kind) + 1:]] = z[key]
    return found


def cut_to_length(inputs: dict[str, np.ndarray], axes: dict[str, tuple[int, ...]], length: int
                  ) -> dict[str, np.ndarray]:
    """The first ``length`` positions of every dynamic axis (a sentence's first tokens)."""
    out = {}
    for name, value in inputs.items():
        for axis in axes.get(name, ()):
            value = np.take(value, np.arange(length), axis=axis)
        out[name] = np.ascontiguousarray(value)
    return out


def base_name(output: str) -> str:
    """``logits@16`` -> ``logits``: gates are set per output, whatever the length."""
    return output.split(AT)[0]


def lengths_record(spec: ModelSpec, manifest: Manifest | None = None) -> dict:
    """For run.json and every manifest: which input axes vary and the lengths validated at; a manifest also says
    which lengths the artifact accepts (an artifact with fixed batch sizes has fixed shapes: one signature each)."""
    if not spec.dynamic_axes:
        return {}
    record = {"dynamic_axes": {k: list(v) for k, v in spec.dynamic_axes.items()}, "lengths": list(spec.lengths)}
    if manifest is not None:
        record["accepts_lengths"] = list(spec.lengths) if manifest.batch_sizes else "any the model allows"
    return record


def length_dims(inputs: tuple[TensorSpec, ...], spec: ModelSpec) -> tuple[TensorSpec, ...]:
    """The dynamic axes named "length" in the manifest, whatever symbol the converter gave them."""
    return tuple(replace(t, shape=tuple("length" if i in spec.dynamic_axes.get(t.name, ()) else d
                                        for i, d in enumerate(t.shape))) for t in inputs)


def own_length(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> list[int]:
    """The length of the validation data itself, for a model with dynamic axes."""
    if not spec.dynamic_axes:
        return []
    name, axes = next(iter(spec.dynamic_axes.items()))
    return [int(inputs[name].shape[axes[0]])]
