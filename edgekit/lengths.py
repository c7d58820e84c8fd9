"""A model with dynamic axes is validated at several lengths: the reference keeps its inputs cut to each other
length and torch's outputs on them. Numpy only: bench workers read these arrays without torch."""
from __future__ import annotations

import numpy as np

LENGTH_PREFIX = "length"  # reference.npz keys "length16:input:NAME", "length16:output:NAME"
AT = "@"  # an output at another length is named "NAME@16" in validation


def arrays_at_lengths(z, kind: str) -> dict[int, dict[str, np.ndarray]]:
    """The ``kind`` ("input" / "output") arrays of every other length in an open reference.npz."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for key in z.files:
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
