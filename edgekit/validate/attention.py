"""Attention of each runtime against the original, per layer and head.

An attention output is ``[batch, (layer,) (head,) (query,) key]``: the last axis is the distribution (it sums to 1),
the axes between batch and the last two name the groups the report compares one by one."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_K = 3


@dataclass(frozen=True)
class HeadStats:
    output: str
    group: str  # "layer 0 head 1", "head 2", or "all"
    max_abs_error: float
    js_divergence: float  # Jensen-Shannon, bits (0 same .. 1 disjoint), mean over samples and queries
    topk_overlap: float  # share of the torch top-k positions the runtime also ranks top-k
    k: int
    entropy_torch: float  # bits, mean over samples and queries
    entropy_runtime: float

    @property
    def entropy_shift(self) -> float:
        return self.entropy_runtime - self.entropy_torch


def group_names(shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """(label, index) of each group of an attention tensor's shape (batch first)."""
    lead = shape[1:-2] if len(shape) >= 4 else ()
    if not lead:
        return [("all", ())]
    axes = ["layer", "head"] if len(lead) == 2 else ["head"] if len(lead) == 1 else [f"axis{i}" for i in
                                                                                       range(len(lead))]
    return [(" ".join(f"{a} {i}" for a, i in zip(axes, index)), index) for index in np.ndindex(*lead)]


def distributions(x: np.ndarray) -> np.ndarray:
    """Rows over the last axis as probability distributions (quantized outputs need not sum to exactly 1)."""
    p = np.clip(x.astype(np.float64), 0.0, None)
    total = p.sum(-1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / x.shape[-1])


def entropy_bits(p: np.ndarray) -> np.ndarray:
    return -(p * np.log2(np.where(p > 0, p, 1.0))).sum(-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = (p + q) / 2
    return entropy_bits(m) - (entropy_bits(p) + entropy_bits(q)) / 2


def topk_overlap(p: np.ndarray, q: np.ndarray, k: int) -> float:
    top_p = np.argsort(-p, axis=-1)[..., :k]
    top_q = np.argsort(-q, axis=-1)[..., :k]
    hits = (top_p[..., :, None] == top_q[..., None, :]).any(-1).sum(-1)
    return float(hits.mean() / k)


def _select(x: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """The group's rows as [batch * queries, keys]."""
    part = x[(slice(None), *index)] if index else x
    return part.reshape(-1, x.shape[-1])


def attention_stats(name: str, reference: np.ndarray, actual: np.ndarray, k: int = TOP_K) -> tuple[HeadStats, ...]:
    k = min(k, reference.shape[-1])
    out = []
    for label, index in group_names(reference.shape):
        ref, act = _select(reference, index), _select(actual, index)
        p, q = distributions(ref), distributions(act)
        out.append(HeadStats(name, label, float(np.abs(ref.astype(np.float64) - act).max(initial=0.0)),
                             float(js_divergence(p, q).mean()), topk_overlap(p, q, k), k,
                             float(entropy_bits(p).mean()), float(entropy_bits(q).mean())))
    return tuple(out)
