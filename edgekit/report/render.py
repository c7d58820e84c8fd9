"""The four outputs of a bench (and of an export, whose rows have no measurement yet): report.json (schema
edgekit.report/4, documented in docs/reference/report-schema.md), report.md, a self-contained report.html, junit.xml."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from edgekit._version import __version__
from edgekit.errors import clean
from edgekit.fsutil import jsonable, read_json, write_json, write_text
from edgekit.report import errors_cell, markdown_table, pct, precision_cell
from edgekit.report.speed import (
    TOP_OPS,
    SlowerThanFp32,
    profile_json,
    profile_summary,
    slower_than_fp32,
    top_layers_table,
)
from edgekit.results import stage_totals
from edgekit.validate.gates import Status

if TYPE_CHECKING:
    from edgekit.results import BenchResult, BenchRow

REPORT_SCHEMA = "edgekit.report/4"  # /3 added the per-stage totals; /4 each row's profile and slower_than_fp32


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def speedup(row: BenchRow, torch: BenchRow | None) -> float | None:
    """torch eager median / this row's median, batch 1, one thread."""
    if row.measurement is None or torch is None or torch.measurement is None:
        return None
    return torch.measurement.latency_1t.median_ms / row.measurement.latency_1t.median_ms


def row_json(row: BenchRow, torch: BenchRow | None, slower: SlowerThanFp32 | None = None) -> dict:
    v = row.validation
    data = {k: jsonable(getattr(v, k)) for k in ("target", "backend", "status", "stage", "reason", "samples",
                                                  "torch_accuracy", "accuracy", "outputs", "checks", "precision",
                                                  "warnings")}
    m = row.measurement
    data["measurement"] = None if m is None else {**jsonable(m), "model_rss_mb": m.model_rss_mb,
                                                  "throughput_per_second": m.throughput.per_second
                                                  if m.throughput else None,
                                                  "speedup_vs_torch_1t": speedup(row, torch)}
    if data["measurement"] is not None:  # the profile is a row field of its own, its top ops only
        del data["measurement"]["profile"]
    data["profile"] = profile_json(m.profile if m else None)
    data["slower_than_fp32"] = jsonable(slower)
    data["attention"] = [{**jsonable(h), "entropy_shift": h.entropy_shift} for h in row.attention]
    data["occlusion"] = jsonable(row.occlusion)
    data["worker_seconds"] = row.seconds
    return data


def _data(result: BenchResult) -> dict | None:
    r = result.reference
    return None if r is None else {"origin": r.origin, "samples": r.samples, "real": r.real,
                                   "labels": r.labels is not None, "text": r.describe()}


def _validated_on(result: BenchResult) -> str:
    return f"{result.reference.describe()}; " if result.reference is not None else ""


def report_json(result: BenchResult) -> dict:
    e = result.explanation
    slower = slower_than_fp32(result.rows)
    compression = result.folder / "compression.json"
    return {
        "schema": REPORT_SCHEMA, "edgekit": __version__, "source": result.source, "task": result.task,
        "torch_accuracy": result.torch_accuracy, "timing": jsonable(result.timing),
        "data": _data(result),
        "compression": read_json(compression) if compression.is_file() else None,
        "attention_outputs": list(result.attention_outputs),
        "torch": row_json(result.torch, None) if result.torch else None,
        "rows": [row_json(r, result.torch, slower.get(r.target)) for r in result.rows],
        "totals": stage_totals([r.validation for r in result.rows]),
        "explanation": None if e is None else {
            "image_input": e.plan.image_input, "samples": list(e.plan.samples), "patch": e.plan.patch,
            "grid": list(e.plan.grid), "classes": e.classes.tolist(),
            "saliency_vs_occlusion_rho": e.saliency_vs_occlusion},
    }


def _agreement(row: BenchRow) -> str:
    logits = next((s for s in row.validation.outputs if s.top1_agreement is not None), None)
    return "-" if logits is None else f"{logits.top1_agreement:.3f}"


def _note(row: BenchRow) -> str:
    v = row.validation
    if v.stage:
        return f"{v.stage.value}: {v.reason}"
    warned = [f"{c.subject} {c.metric} {c.value:.3g} beyond warn {c.warn:g}" + (f" ({c.note})" if c.note else "")
              for c in v.checks if c.status is Status.WARN]
    return "; ".join([*warned, *v.warnings, *(f"{s.name}: {s.flips()}" for s in v.outputs if s.flip_leads)])


def main_table(result: BenchResult) -> list[list[str]]:
    header = ["target", "status", "val acc", "top-1 agree", "max abs error", "p50 ms 1t", "p90 ms 1t",
              "p50 ms all", "x torch 1t", "inf/s", "peak RSS MB", "size KB", "precision (real)", "note"]
    body = []
    slower = slower_than_fp32(result.rows)
    for row in ([result.torch] if result.torch else []) + list(result.rows):
        m = row.measurement
        x = speedup(row, result.torch)
        flag = slower.get(row.target) if row is not result.torch else None
        body.append([row.target, row.validation.status.value, pct(row.validation.accuracy), _agreement(row),
                     errors_cell(row.validation), _ms(m and m.latency_1t.median_ms), _ms(m and m.latency_1t.p90_ms),
                     _ms(m and m.latency_all.median_ms) + (f" ({m.threads_all}t)" if m else ""),
                     "-" if x is None else f"{x:.2f}x",
                     "-" if m is None or m.throughput is None else f"{m.throughput.per_second:,.0f}",
                     "-" if m is None else f"{m.peak_rss_mb:.0f}",
                     "-" if m is None else f"{m.artifact_bytes / 1024:.1f}", precision_cell(row.validation),
                     "; ".join(filter(None, [flag.note() if flag else "", _note(row)]))])
    return [header, *body]


def _slower_lines(result: BenchResult) -> list[str]:
    return [f"{target}: {flag.detail()}" for target, flag in slower_than_fp32(result.rows).items()]


_LAYERS_INTRO = (f"Per target, the top {TOP_OPS} ops by mean time per inference, as its runtime's own profiler "
                 "timed them (the graph after the runtime's fusions; one sample, one thread); % of the ops' "
                 "profiled total; module: the torch module an op came from (- unknown).")


def _profiled_rows(result: BenchResult) -> list[BenchRow]:
    """The rows the top-layers section speaks of: every target that got as far as being benched or profiled."""
    return [r for r in result.rows if r.measurement is not None]


def bench_summary_table(results: list[BenchResult]) -> list[list[str]]:
    """One line per model and target, for benches of several models."""
    header = ["model", "target", "status", "val acc", "top-1 agree", "worst max abs error", "p50 ms 1t",
              "x torch", "size KB"]
    body = []
    for result in results:
        for row in ([result.torch] if result.torch else []) + list(result.rows):
            m, x = row.measurement, speedup(row, result.torch)
            worst = max(row.validation.outputs, key=lambda s: s.max_abs_error, default=None)
            body.append([result.source, row.target, row.validation.status.value, pct(row.validation.accuracy),
                         _agreement(row), "-" if worst is None else f"{worst.name} {worst.max_abs_error:.1e}",
                         _ms(m and m.latency_1t.median_ms), "-" if x is None else f"{x:.2f}x",
                         "-" if m is None else f"{m.artifact_bytes / 1024:.1f}"])
    return [header, *body]


def attention_table(result: BenchResult) -> list[list[str]]:
    header = ["target", "output", "group", "max abs error", "JS divergence (bits)", "top-k overlap",
              "entropy torch -> runtime (bits)"]
    body = [[r.target, h.output, h.group, f"{h.max_abs_error:.2e}", f"{h.js_divergence:.2e}",
             f"{h.topk_overlap:.3f} (k={h.k})", f"{h.entropy_torch:.3f} -> {h.entropy_runtime:.3f}"]
            for r in result.rows for h in r.attention]
    return [header, *body] if body else []


def _rho(e) -> str:
    return "-" if e.saliency_vs_occlusion is None else f"{e.saliency_vs_occlusion:.2f}"


def occlusion_table(result: BenchResult) -> list[list[str]]:
    body = [[r.target, f"{r.occlusion.cosine:.4f}", f"{r.occlusion.max_abs_error:.3f}",
             f"{r.occlusion.top_patch_agreement:.2f}"] for r in result.rows if r.occlusion]
    return [["target", "map cosine vs torch", "max abs error", "same top patch"], *body] if body else []


def report_markdown(result: BenchResult) -> str:
    parts = [f"# edgekit report: {result.source}\n", f"{_validated_on(result)}torch accuracy: "
             f"{pct(result.torch_accuracy)}; "
             "latency is batch 1, one request (median of many runs after warm-up); x torch = torch eager "
             "median / this median, one thread.\n", markdown_table(main_table(result)),
             "\nRows per outcome: " + ", ".join(f"{k} {v}" for k, v in
                                                stage_totals([r.validation for r in result.rows]).items() if v) + "\n"]
    if lines := _slower_lines(result):
        parts += ["**Quantized rows slower than their fp32 row** (median latency, batch 1, 1 thread):\n",
                  *(f"- **{line}**" for line in lines), ""]
    if rows := _profiled_rows(result):
        parts.append(f"\n## Top layers by time\n\n{_LAYERS_INTRO}\n")
        for row in rows:
            parts.append(f"\n### {row.target}\n\n{profile_summary(row)}\n")
            if table := top_layers_table(row):
                parts.append(markdown_table(table))
    if table := attention_table(result):
        parts += ["\n## Attention against the original (per layer and head)\n", markdown_table(table)]
    if table := occlusion_table(result):
        e = result.explanation
        parts += ["\n## Occlusion maps against the original\n",
                  f"{len(e.plan.samples)} samples, {e.plan.grid[0]}x{e.plan.grid[1]} patches of {e.plan.patch} px; "
                  f"torch gradient saliency vs torch occlusion: Spearman rho {_rho(e)}.\n",
                  markdown_table(table)]
    return "\n".join(parts) + "\n"


DEVICES_FILE = "devices.json"
_DEVICES_START, _DEVICES_END = "<!--devices-->", "<!--/devices-->"


def read_devices(folder: Path) -> list[dict]:
    path = folder / DEVICES_FILE
    return read_json(path, list) if path.is_file() else []


def devices_table(devices: list[dict], host_rows: list[dict]) -> list[list[str]]:
    """Rows measured on devices by `edgekit device-bench`, beside the host's numbers for the same target."""
    host = {r["target"]: r.get("measurement") for r in host_rows}
    body = []
    for d in devices:
        if d.get("error"):  # a farm's device that could not be benched: its reason, no numbers
            body.append([d["device"], d["target"], "ERROR", "-", "-", "-", "-", "-", "-", d["error"]])
            continue
        b, h = d["bench"], host.get(d["target"])
        body.append([d["device"], d["target"], d["check"]["status"], str(d["check"]["samples"]),
                     _ms(b["latency_1t"]["median_ms"]), _ms(b["latency_1t"]["p90_ms"]),
                     f"{_ms(b['latency_all']['median_ms'])} ({b['latency_all']['threads']}t)",
                     "-" if b.get("peak_rss_mb") is None else f"{b['peak_rss_mb']:.0f}",
                     "-" if not h else _ms(h["latency_1t"]["median_ms"]), ""])
    header = ["device", "target", "check", "samples", "p50 ms 1t", "p90 ms 1t", "p50 ms all", "peak RSS MB",
              "host p50 ms 1t", "note"]
    return [header, *body] if body else []


def add_devices(folder: Path) -> None:
    """Put the device rows of devices.json into the run's report.json, report.md and report.html."""
    devices = read_devices(folder)
    report_path = folder / "report.json"
    report = read_json(report_path) if report_path.is_file() else {"rows": []}
    report["devices"] = devices
    write_json(report_path, report)
    table = devices_table(devices, report.get("rows", []))
    md_path, html_path = folder / "report.md", folder / "report.html"
    if md_path.is_file():
        md = md_path.read_text(encoding="utf-8").split("\n## On devices\n")[0].rstrip("\n") + "\n"
        write_text(md_path, md + f"\n## On devices\n\n{markdown_table(table)}\n" if table else md)
    if html_path.is_file():
        page = html_path.read_text(encoding="utf-8")
        start, end = page.find(_DEVICES_START), page.find(_DEVICES_END)
        if start >= 0 and end > start:
            block = f"<h2>On devices</h2>{html_table(table)}" if table else ""
            write_text(html_path, page[:start + len(_DEVICES_START)] + block + page[end:])


def junit_xml(result: BenchResult) -> str:
    rows = list(result.rows)
    failures = sum(r.validation.status is Status.FAIL for r in rows)
    suite = ET.Element("testsuite", name=f"edgekit {result.source}", tests=str(len(rows)), failures=str(failures),
                       errors="0", time=f"{sum(r.seconds for r in rows):.3f}")
    properties = ET.SubElement(suite, "properties")  # rows per outcome: PASS, WARN, then every failure stage
    for outcome, count in stage_totals([r.validation for r in rows]).items():
        ET.SubElement(properties, "property", name=f"edgekit.total.{outcome}", value=str(count))
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"edgekit.{result.source}", name=r.target,
                             time=f"{r.seconds:.3f}")
        v = r.validation
        # reasons carry third-party text: control characters are not allowed in XML 1.0
        if v.status is Status.FAIL:
            stage = v.stage.value if v.stage else "FAIL"
            ET.SubElement(case, "failure", message=clean(f"{stage}: {v.reason}"), type=stage).text = clean(_note(r))
        elif v.warnings:
            ET.SubElement(case, "system-out").text = clean("WARN: " + "; ".join(v.warnings))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def html_table(table: list[list[str]], row_ids: bool = False) -> str:
    if not table:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = []
    for r in table[1:]:
        attrs = f' id="row-{html.escape(r[0])}" class="status-{html.escape(r[1])}"' if row_ids else ""
        body.append(f"<tr{attrs}>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#eef}tr.status-PASS td:nth-child(2){background:#cfc}tr.status-WARN td:nth-child(2)
{background:#ffc}tr.status-FAIL td:nth-child(2){background:#fcc}img{max-width:100%;border:1px solid #ddd;margin:6px 0}
.meta{color:#555}.flag{background:#fff3cd;border:1px solid #e0c060;padding:4px 10px;margin:8px 0}"""


# marks the body with how many embedded plots the browser decoded (a check for tests and for humans)
IMAGES_LOADED = ("<script>addEventListener('load',()=>{document.body.dataset.imagesLoaded=[...document.images]"
                  ".filter(i=>i.complete&&i.naturalWidth>0).length})</script>")


def report_html(result: BenchResult, figures: list[tuple[str, str]]) -> str:
    """``figures``: (title, base64 PNG) pairs, embedded so the file stands alone."""
    e = result.explanation
    parts = [f"<h1>edgekit report: {html.escape(result.source)}</h1>",
             f"<p class='meta'>{html.escape(_validated_on(result))}torch accuracy {pct(result.torch_accuracy)}; "
             "latency batch 1, one request; "
             f"x torch = torch eager median / this median (one thread). edgekit {__version__}.</p>",
             html_table(main_table(result), row_ids=True), _DEVICES_START + _DEVICES_END]
    if lines := _slower_lines(result):
        parts += ["<div class='flag'><b>Quantized rows slower than their fp32 row</b> (median latency, batch 1, "
                  "1 thread):<ul>", *(f"<li>{html.escape(line)}</li>" for line in lines), "</ul></div>"]
    if rows := _profiled_rows(result):
        parts += ["<h2>Top layers by time</h2>", f"<p class='meta'>{html.escape(_LAYERS_INTRO)}</p>"]
        for row in rows:
            parts += [f"<h3 id='layers-{html.escape(row.target)}'>{html.escape(row.target)}</h3>",
                      f"<p class='meta'>{html.escape(profile_summary(row))}</p>", html_table(top_layers_table(row))]
    if table := attention_table(result):
        parts += ["<h2>Attention against the original</h2>", html_table(table)]
    if table := occlusion_table(result):
        parts += ["<h2>Occlusion maps against the original</h2>",
                  f"<p class='meta'>torch gradient saliency vs torch occlusion: Spearman rho "
                  f"{_rho(e)}</p>", html_table(table)]
    for title, png in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{png}'>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgekit {html.escape(result.source)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}{IMAGES_LOADED}</body></html>\n")


def write_bench_reports(result: BenchResult, plots: bool = True) -> None:
    from edgekit.report.plots import figures

    folder = result.folder
    write_json(folder / "report.json", report_json(result))
    write_text(folder / "report.md", report_markdown(result))
    write_text(folder / "report.html", report_html(result, figures(result) if plots else []))
    write_text(folder / "junit.xml", junit_xml(result))
    if read_devices(folder):
        add_devices(folder)
