"""The sweep's reports: every cell in one table, and per source and target family the Pareto front of
quality (task accuracy on real data, else the first output's cosine with torch) against latency (batch 1, one
thread) and artifact size; sweep.html adds a plot of it."""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from edgekit._version import __version__
from edgekit.fsutil import write_json, write_text

if TYPE_CHECKING:
    from edgekit.sweep.run import SweepResult

SCHEMA = "edgekit.sweep/1"


def quality(cell: dict[str, Any]) -> float | None:
    """Task accuracy when the source has a task, else the first output's cosine with torch."""
    value = cell.get("accuracy")
    return value if value is not None else cell.get("cosine")


def _point(cell: dict[str, Any]) -> tuple[float, float, float] | None:
    """(quality, latency, size) of a cell that ran and passed its gates, else None: a FAIL is no trade-off."""
    if cell.get("status") not in ("PASS", "WARN"):
        return None
    q, ms, size = quality(cell), cell.get("latency_ms"), cell.get("size_bytes")
    if q is None or ms is None or size is None:
        return None
    return q, ms, size


def _dominates(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2] and a != b


def pareto_keys(cells: tuple[dict[str, Any], ...]) -> set[str]:
    """Keys of the cells no other cell of the same source and family beats on quality, latency and size at once."""
    front = set()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["source"], cell["family"]), []).append(cell)
    for group in groups.values():
        points = {c["key"]: p for c in group if (p := _point(c)) is not None}
        front |= {k for k, p in points.items() if not any(_dominates(q, p) for q in points.values())}
    return front


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _precision(cell: dict[str, Any]) -> str:
    p = cell.get("precision")
    return "-" if not p else (p["compute"] if p["compute"] == p["weights"] else f"{p['compute']} / w {p['weights']}")


def table(result: SweepResult) -> list[list[str]]:
    front = pareto_keys(result.cells)
    rows = [["source", "recipe", "target", "status", "quality", "latency ms (1 thread)", "size KB", "runs in",
             "pareto", "reused", "node", "note"]]
    for c in result.cells:
        note = f"{c['stage']}: {c.get('reason', '')}" if c.get("stage") else ", ".join(c.get("failed_checks", []))
        node = c.get("node") or {}
        rows.append([c["source"], c["recipe"], c["target"], c["status"], _num(quality(c), ".4f"),
                     _num(c.get("latency_ms"), ".3f"), _num(c["size_bytes"] / 1024 if c.get("size_bytes") else None,
                                                            ".1f"),
                     _precision(c), "*" if c["key"] in front else "", "yes" if c.get("reused") else "",
                     node.get("ray_node", node.get("host", ""))[:12], note[:160]])
    return rows


def sweep_json(result: SweepResult) -> dict[str, Any]:
    front = pareto_keys(result.cells)
    return {"schema": SCHEMA, "edgekit": __version__, "sweep": result.sweep.path, "where": result.where,
            "timing": result.sweep.timing, "threads_per_cell": result.sweep.threads,
            "cells_total": len(result.cells), "reused": result.reused, "ran": result.ran,
            "cells": [{**c, "pareto": c["key"] in front} for c in result.cells]}


def _summary(result: SweepResult) -> str:
    return (f"{len(result.cells)} cells: {result.ran} ran, {result.reused} reused from earlier runs; {result.where}. "
            f"Quality: task accuracy on real data (else output cosine with torch); latency: median, batch 1, "
            f"one thread ({result.sweep.timing} timing). Pareto (*): no other passing cell of the same source and "
            "target family is at least as good on quality, latency and size at once.")


def sweep_markdown(result: SweepResult) -> str:
    rows = table(result)
    lines = [f"# edgekit sweep: {result.sweep.path}", "", _summary(result), "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def pareto_plot(result: SweepResult) -> str | None:
    """Quality against latency, one panel per source, a colour per family; the front drawn as a line."""
    from edgekit.report.plots import png, pyplot

    sources = list(dict.fromkeys(c["source"] for c in result.cells))
    points = [(c, p) for c in result.cells if (p := _point(c)) is not None]
    if not points:
        return None
    front = pareto_keys(result.cells)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 3.6), squeeze=False)
    families = list(dict.fromkeys(c["family"] for c in result.cells))
    colours = {f: plt.cm.tab10(i % 10) for i, f in enumerate(families)}
    for ax, source in zip(axes[0], sources):
        for family in families:
            mine = sorted(((c, p) for c, p in points if c["source"] == source and c["family"] == family),
                          key=lambda cp: cp[1][1])
            if not mine:
                continue
            ax.scatter([p[1] for _, p in mine], [p[0] for _, p in mine], color=colours[family], label=family, s=28)
            for c, p in mine:
                ax.annotate(c["recipe"], (p[1], p[0]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            best = [p for c, p in mine if c["key"] in front]
            ax.plot([p[1] for p in best], [p[0] for p in best], color=colours[family], linewidth=1, alpha=0.7)
        ax.set_title(source, fontsize=10)
        ax.set_xlabel("latency ms (batch 1, 1 thread)")
        ax.set_ylabel("quality")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return png(fig)


def sweep_html(result: SweepResult, plot: str | None) -> str:
    from edgekit.report.render import CSS, IMAGES_LOADED, html_table

    parts = [f"<h1>edgekit sweep: {html.escape(result.sweep.path)}</h1>",
             f"<p class='meta'>{html.escape(_summary(result))} edgekit {__version__}.</p>",
             html_table(table(result)).replace("<td>FAIL</td>", "<td style='background:#fcc'>FAIL</td>")]
    if plot:
        parts.append(f"<h2>Quality against latency</h2><img alt='pareto' src='data:image/png;base64,{plot}'>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgekit sweep</title><style>{CSS}</style>"
            f"</head><body>{''.join(parts)}{IMAGES_LOADED}</body></html>\n")


def write_sweep_reports(result: SweepResult) -> None:
    write_json(result.folder / "sweep.json", sweep_json(result))
    write_text(result.folder / "sweep.md", sweep_markdown(result))
    write_text(result.folder / "sweep.html", sweep_html(result, pareto_plot(result)))
