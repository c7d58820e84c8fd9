"""Tables of a run for the terminal and markdown; the report files themselves are written by render.py."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.results import RunResult, Validation


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def errors_cell(row: Validation) -> str:
    return ", ".join(f"{s.name} {s.nonfinite} NaN/Inf" if s.nonfinite else f"{s.name} {s.max_abs_error:.2e}"
                     for s in row.outputs) or "-"


def precision_cell(row: Validation) -> str:
    p = row.precision
    return "-" if p is None else f"{p.declared} -> {p.compute} (weights {p.weights})"


def rows_table(result: RunResult) -> list[list[str]]:
    header = ["target", "status", "torch acc", "runtime acc", "max abs error per output", "precision (real)", "note"]
    body = []
    for row in result.rows:
        choice = row.precision.evidence.get("choice") if row.precision else None  # e.g. fp16 -> f32 compute
        note = f"{row.stage.value}: {row.reason}" if row.stage else "; ".join([*row.warnings, *filter(None, [choice])])
        body.append([row.target, row.status.value, pct(result.torch_accuracy), pct(row.accuracy), errors_cell(row),
                     precision_cell(row), note])
    return [header, *body]


def summary_table(results: list[RunResult]) -> list[list[str]]:
    """One line per model and target, for runs of several models."""
    body = [[r.source, row.target, row.status.value, pct(r.torch_accuracy), pct(row.accuracy), errors_cell(row)]
            for r in results for row in r.rows]
    return [["model", "target", "status", "torch acc", "runtime acc", "max abs error per output"], *body]


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(table: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in table]
    lines = ["| " + " | ".join(r) + " |" for r in esc]
    lines.insert(1, "|" + "|".join("---" for _ in table[0]) + "|")
    return "\n".join(lines)


def compression_lines(result: RunResult) -> list[str]:
    c = result.compression
    if c is None:
        return []
    r = c.recipe
    lines = [f"compression: {r.prune or 'no pruning'}{f' {r.amount:g}' if r.prune else ''}"
             f"{f', recovered by {r.recover} ({r.epochs} epochs)' if r.recover else ''} in {c.seconds:.0f} s",
             f"  params {c.params_before:,} -> {c.params_after:,}; FLOPs {c.flops_before:,} -> {c.flops_after:,} "
             f"({c.flops_before / max(c.flops_after, 1):.2f}x fewer)",
             f"  torch val accuracy: original {pct(c.accuracy_before)}, pruned {pct(c.accuracy_pruned)}, "
             f"recovered {pct(c.accuracy_recovered)}"]
    if c.sparsity:
        lines.append(f"  sparsity overall {100 * c.overall_sparsity:.1f}%: " + ", ".join(
            f"{name} {100 * value:.0f}%" for name, value in c.sparsity.items()))
    if c.channels:
        lines.append("  channels: " + ", ".join(f"{name} {a}->{b}" for name, (a, b) in c.channels.items()))
    if c.note:
        lines.append(f"  note: {c.note}")
    return lines
