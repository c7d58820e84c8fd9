"""Two readings of a bench's speed: where each target spends its time (the top ops of its runtime's own profiler)
and which quantized rows are slower than the fp32 row of the same backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgekit.config import QUANTIZED_PRECISIONS

if TYPE_CHECKING:
    from edgekit.bench.measurement import OpProfile
    from edgekit.results import BenchRow

TOP_OPS = 10


@dataclass(frozen=True)
class SlowerThanFp32:
    """A quantized row whose one-thread median latency is above that of the fp32 row of its backend."""

    fp32_target: str
    ratio: float  # this median / the fp32 median, > 1
    median_ms: float
    fp32_median_ms: float

    def detail(self) -> str:
        return (f"{self.ratio:.2f}x the median of {self.fp32_target} "
                f"({self.median_ms:.3f} vs {self.fp32_median_ms:.3f} ms, 1 thread)")

    def note(self) -> str:
        return f"slower than fp32: {self.detail()}"


def _declared(row: BenchRow) -> str | None:
    p = row.validation.precision
    return None if p is None else p.declared


def slower_than_fp32(rows: tuple[BenchRow, ...] | list[BenchRow]) -> dict[str, SlowerThanFp32]:
    """Target -> how much slower it is, for every int8 / int8-dynamic row slower (median, 1 thread) than the fp32
    row of the same backend in the same bench (the first one, in the run's order, when there are several)."""
    fp32: dict[str, BenchRow] = {}
    for row in rows:
        if _declared(row) == "fp32" and row.measurement is not None:
            fp32.setdefault(row.validation.backend, row)
    flagged = {}
    for row in rows:
        base = fp32.get(row.validation.backend)
        if _declared(row) not in QUANTIZED_PRECISIONS or row.measurement is None or base is None:
            continue
        mine, theirs = row.measurement.latency_1t.median_ms, base.measurement.latency_1t.median_ms
        if mine > theirs:
            flagged[row.target] = SlowerThanFp32(base.target, mine / theirs, mine, theirs)
    return flagged


def module_cell(module: str | None) -> str:
    return "-" if module is None else module or "(root)"


def profile_json(profile: OpProfile | None) -> dict | None:
    if profile is None:
        return None
    total = profile.total_ms
    return {"runs": profile.runs, "threads": profile.threads, "error": profile.error, "ops": len(profile.ops),
            "total_ms": total,
            "top": [{"name": op.name, "op_type": op.op_type, "module": op.module, "ms": op.ms,
                     "percent": 100 * op.ms / total if total > 0 else 0.0} for op in profile.top(TOP_OPS)]}


def profile_summary(row: BenchRow) -> str:
    """One line: how the profile was taken and how its ops add up against the measured latency, or why there
    is none."""
    m = row.measurement
    if m is None:
        stage = row.validation.stage
        return f"not profiled: the row was not measured ({stage.value if stage else row.validation.status.value})"
    p = m.profile
    if p is None:
        return "not profiled"
    if p.error:
        return f"not profiled: {p.error}"
    median = m.latency_1t.median_ms
    ratio = p.total_ms / median
    why = ""
    if ratio > 1.2:
        why = ": the profiler's own cost in every op, so read the shares more than the ms"
    elif ratio < 0.8:
        why = ": the rest is time outside the ops (the call, inputs and outputs)"
    return (f"{len(p.ops)} ops, {p.threads} thread{'s' if p.threads != 1 else ''}, mean of {p.runs} profiled runs; "
            f"they sum to {p.total_ms:.3f} ms, {ratio:.2f}x the {median:.3f} ms one-thread median of the timed "
            f"runs{why}")


def top_layers_table(row: BenchRow) -> list[list[str]]:
    """The top ops of a row's profile: name, type, torch module, ms per inference, % of the profiled total."""
    p = row.measurement.profile if row.measurement is not None else None
    if p is None or not p.ops:
        return []
    total = p.total_ms
    body = [[op.name, op.op_type, module_cell(op.module), f"{op.ms:.4f}",
             f"{100 * op.ms / total:.1f}%" if total > 0 else "-"] for op in p.top(TOP_OPS)]
    return [["op", "type", "module", "ms", "% of profiled"], *body]
