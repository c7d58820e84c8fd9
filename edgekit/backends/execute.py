"""Run a Session over many samples: the caller's NCHW/int64 arrays in, the artifact's layout, dtypes and batch
sizes on the runtime side, so every backend is compared like for like."""
from __future__ import annotations

import numpy as np

from edgekit.artifact import Manifest
from edgekit.backends.base import Session
from edgekit.errors import EdgekitError

DYNAMIC_BATCH = 100


def to_artifact_layout(inputs: dict[str, np.ndarray], manifest: Manifest) -> dict[str, np.ndarray]:
    """NCHW -> NHWC for 4-D inputs of an NHWC artifact; cast to the artifact's input dtypes (e.g. int64 -> int32)."""
    out = {}
    for spec in manifest.inputs:
        if spec.name not in inputs:
            raise EdgekitError(f"no data for the artifact's input {spec.name!r}")
        value = inputs[spec.name]
        if manifest.layout == "NHWC" and value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        out[spec.name] = np.ascontiguousarray(value, dtype=np.dtype(spec.dtype))
    return out


def _check_shapes(inputs: dict[str, np.ndarray], manifest: Manifest) -> None:
    for spec in manifest.inputs:
        got = inputs[spec.name].shape
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int) and i > 0]
        if len(got) != len(spec.shape) or any(got[i] != d for i, d in fixed):
            want = "x".join(str(d) for d in spec.shape)
            raise EdgekitError(f"input {spec.name!r} has shape {'x'.join(map(str, got))}, the artifact wants {want}")


def run_batched(session: Session, manifest: Manifest, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All samples through the session, in chunks the artifact accepts (padding the last fixed-size chunk)."""
    feed = to_artifact_layout(inputs, manifest)
    _check_shapes(feed, manifest)
    n = len(next(iter(feed.values())))
    batch = max(manifest.batch_sizes) if manifest.batch_sizes else DYNAMIC_BATCH
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        part = {k: v[start:start + batch] for k, v in feed.items()}
        size = len(next(iter(part.values())))
        if manifest.batch_sizes and size != batch:
            fit = min((b for b in manifest.batch_sizes if b >= size), default=batch)
            part = {k: np.concatenate([v, np.repeat(v[-1:], fit - size, axis=0)]) for k, v in part.items()}
        result = session.run(part)
        for name, value in result.items():
            chunks.setdefault(name, []).append(np.asarray(value)[:size])
    return {name: np.concatenate(parts) for name, parts in chunks.items()}
