"""Run a Session over many samples: the caller's NCHW/int64 arrays in, the artifact's layout, dtypes and batch
sizes on the runtime side, so every backend is compared like for like.

Numpy only and no edgekit imports: bundles carry this file as ``edgekit_execute.py``, so the device feeds a model
exactly as validation did. ``manifest`` is an edgekit Manifest or a bundle's manifest.json (a dict): both have a
layout, inputs (name, shape, dtype) and batch sizes."""
from __future__ import annotations

from typing import Any

import numpy as np

DYNAMIC_BATCH = 100


def _get(manifest: Any, key: str) -> Any:
    return manifest.get(key) if isinstance(manifest, dict) else getattr(manifest, key)


def input_specs(manifest: Any) -> list[tuple[str, tuple, str]]:
    """(name, shape, dtype) of every input; a str dimension is dynamic."""
    return [(s["name"], tuple(s["shape"]), s["dtype"]) if isinstance(s, dict) else (s.name, tuple(s.shape), s.dtype)
            for s in _get(manifest, "inputs")]


def to_artifact_layout(inputs: dict[str, np.ndarray], manifest: Any) -> dict[str, np.ndarray]:
    """NCHW -> NHWC for 4-D inputs of an NHWC artifact; cast to the artifact's input dtypes (e.g. int64 -> int32)."""
    out = {}
    for name, _, dtype in input_specs(manifest):
        if name not in inputs:
            raise ValueError(f"no data for the artifact's input {name!r}")
        value = inputs[name]
        if _get(manifest, "layout") == "NHWC" and value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        out[name] = np.ascontiguousarray(value, dtype=np.dtype(dtype))
    return out


def check_shapes(inputs: dict[str, np.ndarray], manifest: Any) -> None:
    for name, shape, _ in input_specs(manifest):
        got = inputs[name].shape
        fixed = [(i, d) for i, d in enumerate(shape) if isinstance(d, int) and i > 0]
        if len(got) != len(shape) or any(got[i] != d for i, d in fixed):
            want = "x".join(str(d) for d in shape)
            raise ValueError(f"input {name!r} has shape {'x'.join(map(str, got))}, the artifact wants {want}")


def run_batched(session: Any, manifest: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All samples through the session, in chunks the artifact accepts (padding the last fixed-size chunk)."""
    feed = to_artifact_layout(inputs, manifest)
    check_shapes(feed, manifest)
    n = len(next(iter(feed.values())))
    sizes = _get(manifest, "batch_sizes")
    batch = max(sizes) if sizes else DYNAMIC_BATCH
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        part = {k: v[start:start + batch] for k, v in feed.items()}
        size = len(next(iter(part.values())))
        if sizes and size not in sizes:
            fit = min((b for b in sizes if b >= size), default=batch)
            part = {k: np.concatenate([v, np.repeat(v[-1:], fit - size, axis=0)]) for k, v in part.items()}
        for name, value in session.run(part).items():
            chunks.setdefault(name, []).append(np.asarray(value)[:size])
    return {name: np.concatenate(parts) for name, parts in chunks.items()}
