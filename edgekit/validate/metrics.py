"""Error statistics of one output against the reference: max/mean abs, cosine, SQNR, top-1 agreement."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SQNR_CAP_DB = 300.0  # identical outputs have infinite SQNR; JSON has no infinity


def gate_status(value: float, warn: float, fail: float, higher_is_better: bool) -> str:
    """"PASS", "WARN" (worse than ``warn``) or "FAIL" (worse than ``fail``). Bundles carry this module, so the
    device gates its check exactly as validation does."""
    if value != value:  # NaN compares false with everything: it would pass every gate
        return "FAIL"
    if higher_is_better:
        return "FAIL" if value < fail else "WARN" if value < warn else "PASS"
    return "FAIL" if value > fail else "WARN" if value > warn else "PASS"


@dataclass(frozen=True)
class OutputStats:
    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    sqnr_db: float
    top1_agreement: float | None = None  # for 2-D class scores only
    max_rel_error: float = 0.0  # max abs error / max |reference|: one fp32 tolerance fits logits and hidden states
    nonfinite: int = 0  # NaN / Inf values where the reference is finite: always a failure, named as such

    def metric(self, name: str) -> float | None:
        return getattr(self, name)


def output_stats(name: str, reference: np.ndarray, actual: np.ndarray) -> OutputStats:
    ref = reference.astype(np.float64).ravel()
    act = actual.astype(np.float64).ravel()
    diff = act - ref
    norms = np.linalg.norm(ref) * np.linalg.norm(act)
    cosine = float(ref @ act / norms) if norms > 0 else float(np.array_equal(ref, act))
    noise = float(diff @ diff)
    sqnr = SQNR_CAP_DB if noise == 0 else min(SQNR_CAP_DB, 10 * np.log10(max(float(ref @ ref), 1e-300) / noise))
    agreement = None
    if reference.ndim == 2 and reference.shape[1] > 1:
        agreement = float((reference.argmax(1) == actual.argmax(1)).mean())
    max_abs = float(np.abs(diff).max(initial=0.0))
    scale = float(np.abs(ref).max(initial=0.0))
    nonfinite = int((~np.isfinite(act) & np.isfinite(ref)).sum())
    return OutputStats(name, tuple(reference.shape), max_abs, float(np.abs(diff).mean()), cosine, float(sqnr),
                       agreement, max_abs / scale if scale > 0 else max_abs, nonfinite)
