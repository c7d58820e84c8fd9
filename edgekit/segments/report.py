"""A segmented run in tables: the segments and their cuts, the end-to-end validation, the pipeline's numbers
(the CLI prints them as text, segments.md holds them as markdown)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.report import errors_cell, markdown_table, text_table

if TYPE_CHECKING:
    from edgekit.segments.bench import PipelineBench
    from edgekit.segments.export import SegmentsResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def segments_table(result: SegmentsResult) -> list[list[str]]:
    header = ["segment", "target", "begins at", "modules", "inputs", "outputs", "MFLOPs", "status (alone)",
              "max abs error per output"]
    body = [[str(s.index), s.validation.target, s.begins_at or "(start)", ", ".join(s.modules), ", ".join(s.inputs),
             ", ".join(s.outputs), f"{s.flops / 1e6:.2f}",
             s.validation.status.value + (f" {s.validation.stage.value}: {s.validation.reason}"
                                          if s.validation.stage else ""), errors_cell(s.validation)]
            for s in result.segments]
    return [header, *body]


def chain_table(result: SegmentsResult) -> list[list[str]]:
    """The end-to-end row, and the chain's error at each cut tensor (where along the chain it grows)."""
    c = result.chain
    rows = [["end to end", c.target, c.status.value, errors_cell(c),
             f"{c.stage.value}: {c.reason}" if c.stage else c.reason or
             (f"accuracy {100 * c.accuracy:.2f}% (torch {100 * c.torch_accuracy:.2f}%)"
              if c.accuracy is not None and c.torch_accuracy is not None else "")]]
    rows += [["cut tensor", s.name, "", f"{s.max_abs_error:.2g} (rel {s.max_rel_error:.2g})", f"cosine {s.cosine:.7f}"]
             for s in result.cut_errors]
    return [["what", "name", "status", "max abs error", "note"], *rows]


def pipeline_table(bench: PipelineBench | None) -> list[list[str]]:
    header = ["how", "threads", "samples/s", "latency median ms", "latency p90 ms"]
    if bench is None:
        return [header, ["not benched", "", "", "", ""]]
    if bench.stage is not None:
        return [header, [f"{bench.stage.value}: {bench.reason}", "", "", "", ""]]
    n = len(bench.stage_ms)
    each = f"{bench.stage_threads} thread{'s' if bench.stage_threads > 1 else ''}"
    rows = [[f"pipeline, {n} stages ({each} each, queues of {bench.queue_size})", f"{n} x {bench.stage_threads}",
             f"{bench.pipeline.per_second:.0f}", _ms(bench.pipeline.latency_median_ms),
             _ms(bench.pipeline.latency_p90_ms)],
            [f"segments one after another, {each}", str(bench.stage_threads), f"{bench.sequential.per_second:.0f}",
             _ms(bench.sequential.latency_median_ms), _ms(bench.sequential.latency_p90_ms)]]
    for u in bench.unsplit:
        rows += [[f"unsplit on {u.target}, profile threads", "profile", f"{u.profile_threads.per_second:.0f}",
                  _ms(u.profile_threads.latency_median_ms), _ms(u.profile_threads.latency_p90_ms)],
                 [f"unsplit on {u.target}, one stage's threads", str(bench.stage_threads),
                  f"{u.stage_threads.per_second:.0f}", _ms(u.stage_threads.latency_median_ms),
                  _ms(u.stage_threads.latency_p90_ms)],
                 [f"unsplit on {u.target}, {n} data-parallel sessions", f"{n} x {bench.stage_threads}",
                  f"{u.parallel.per_second:.0f}", "-", "-"]]
    return [header, *rows]


def stage_lines(bench: PipelineBench | None) -> list[str]:
    if bench is None or bench.stage is not None:
        return []
    stages = ", ".join(f"{i}: {a:.3f} ms alone, {s:.3f} ms streaming"
                       for i, (a, s) in enumerate(zip(bench.stage_alone_ms, bench.stage_ms)))
    lines = [f"per stage (median): {stages}; balance (slowest / mean, alone) {bench.balance:.2f}",
             f"{bench.cores} cores; throughput is the median of {bench.repeats} timed streams"]
    for u in bench.unsplit:
        ratio = bench.against(u.target)
        lines.append(f"pipeline vs unsplit on {u.target}: {ratio['profile_threads']:.2f}x (profile threads), "
                     f"{ratio['stage_threads']:.2f}x (one stage's threads), {ratio['parallel']:.2f}x "
                     "(data-parallel sessions on the same threads)")
    return lines


def text(result: SegmentsResult) -> str:
    parts = [f"{result.source} -> {result.folder} in {len(result.segments)} segments ({result.validated_on})",
             text_table(segments_table(result)), "", text_table(chain_table(result)), "",
             text_table(pipeline_table(result.pipeline)), *stage_lines(result.pipeline)]
    return "\n".join(parts)


def markdown(result: SegmentsResult) -> str:
    parts = [f"# {result.source} in {len(result.segments)} segments", "", result.validated_on, "",
             "## Segments", "", markdown_table(segments_table(result)), "",
             "## End to end", "", markdown_table(chain_table(result)), "",
             "## Pipeline", "", markdown_table(pipeline_table(result.pipeline)), "",
             *(f"- {line}" for line in stage_lines(result.pipeline)), ""]
    return "\n".join(parts)
