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
    # Where top-1 disagrees, by how much the reference preferred its own class over the one picked instead (its
    # score units, ascending), and the reference's median lead of its first class over its second on all samples:
    # flips at leads far under the median are near-ties that any small error turns, not confident answers changed.
    flip_leads: tuple[float, ...] = ()
    median_lead: float | None = None

    def metric(self, name: str) -> float | None:
        return getattr(self, name)

    def confident_flips(self, near_tie: float) -> int:
        """The flips where torch led its runner-up by more than ``near_tie`` x its median lead: answers it was
        sure of that changed."""
        if self.median_lead is None:
            return len(self.flip_leads)
        return sum(lead > near_tie * self.median_lead for lead in self.flip_leads)

    def agreement_beyond_ties(self, near_tie: float) -> float | None:
        """Top-1 agreement with the near-tie flips (``confident_flips``) forgiven: what the gates judge."""
        if self.top1_agreement is None:
            return None
        return 1.0 - self.confident_flips(near_tie) / self.shape[0]

    def flips(self) -> str:
        """The top-1 flips in one phrase ("" without any): how many, and how near a tie each was for the reference."""
        if not self.flip_leads:
            return ""
        low, high = f"{self.flip_leads[0]:.2g}", f"{self.flip_leads[-1]:.2g}"
        leads = low if low == high else f"{low}-{high}"
        return (f"{len(self.flip_leads)} top-1 flip(s) where torch led by {leads} "
                f"(its median lead {self.median_lead:.2g})")


def output_stats(name: str, reference: np.ndarray, actual: np.ndarray) -> OutputStats:
    ref = reference.astype(np.float64).ravel()
    act = actual.astype(np.float64).ravel()
    diff = act - ref
    norms = np.linalg.norm(ref) * np.linalg.norm(act)
    cosine = float(ref @ act / norms) if norms > 0 else float(np.array_equal(ref, act))
    noise = float(diff @ diff)
    sqnr = SQNR_CAP_DB if noise == 0 else min(SQNR_CAP_DB, 10 * np.log10(max(float(ref @ ref), 1e-300) / noise))
    agreement, leads, median_lead = None, (), None
    if reference.ndim == 2 and reference.shape[1] > 1:
        scores = reference.astype(np.float64)
        want, got = scores.argmax(1), actual.argmax(1)
        agreement = float((want == got).mean())
        rows = np.arange(len(scores))
        lead = scores[rows, want] - scores[rows, got]
        leads = tuple(sorted(float(x) for x in lead[want != got]))
        second, first = np.sort(scores, axis=1)[:, -2:].T
        median_lead = float(np.median(first - second))
    max_abs = float(np.abs(diff).max(initial=0.0))
    scale = float(np.abs(ref).max(initial=0.0))
    nonfinite = int((~np.isfinite(act) & np.isfinite(ref)).sum())
    return OutputStats(name, tuple(reference.shape), max_abs, float(np.abs(diff).mean()), cosine, float(sqnr),
                       agreement, max_abs / scale if scale > 0 else max_abs, nonfinite, leads, median_lead)
