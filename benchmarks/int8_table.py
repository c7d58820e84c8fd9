"""Int8 on a real model, per backend: fp32, plain static int8 and accuracy-aware mixed-precision int8, exported,
validated and benched together (batch 1; one thread and all threads). Prints the markdown tables of the
docs/results/int8/ pages (efficientnet.md, mobilenetv2.md, minilm-static.md, minilm-dynamic.md, distillation.md,
cnn-error.md, openvino-cnn.md, ranking.md) and of the README's headline result; it does not write the pages: the
tables are pasted into them.

    python benchmarks/int8_table.py --source examples/efficientnet_lite0.py:build \\
        --calib examples/efficientnet_lite0.py:calibration --data examples/efficientnet_lite0.py:validation \\
        --out runs/int8-effnet [--backends onnx,openvino,tflite] [--seconds 3]

On a busy machine, export with --no-bench, then time the run alone later: ``--out RUN --bench-only``.

Calibration (and the mixed-precision search, which judges on calibration samples) and validation data must be
different images; the table's agreement and cosine are on the validation data."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.bench.run import Timing, bench
from edgekit.config import load_profile, parse_profile

RECIPES = ("fp32", "int8", "int8-mixed")


def profile_for(backend: str, recipe: str, batch_one: bool = True):
    """The standard CPU profile of ``backend`` for ``recipe``, batch 1 only."""
    base = load_profile(f"{backend}-cpu-{recipe}")
    text = base.text
    if batch_one:
        text = "\n".join("batch_sizes = [1]" if line.startswith("batch_sizes") else line for line in text.splitlines())
    return parse_profile(text, base.name)


def _kept(folder: Path) -> str:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return "-"
    mixed = read_manifest(manifest).extra.get("quantization", {}).get("mixed_precision")
    if mixed is None:
        return "-"
    layers = [k["module"] for k in mixed["kept_float_layers"]]
    return f"{len(layers)}: " + ", ".join(f"`{m}`" for m in layers) if layers else "0"


def _logit_cells(validation, logits: str) -> tuple[str, str]:
    stats = next((s for s in validation.outputs if s.name == logits), None)
    cosine = "-" if stats is None else f"{stats.cosine:.5f} ({stats.sqnr_db:.1f} dB)"
    agreement = "-" if stats is None or stats.top1_agreement is None else f"{stats.top1_agreement:.3f}"
    if stats is not None and stats.flip_leads:  # near-ties or confident answers changed: see OutputStats
        agreement += f" ({stats.flips()})"
    return cosine, agreement


def _accuracy_table(run) -> int:
    from edgekit.runfolder import RunFolder

    logits = RunFolder(run.folder).record().outputs[0]
    print(f"{run.validated_on}\n")
    print(f"| target | layers kept in float | {logits} cosine (SQNR) | top-1 agreement | status |")
    print("|" + "---|" * 5)
    for v in run.rows:
        if v.stage is not None and not v.outputs:
            print(f"| {v.target} | {v.stage.value}: {v.reason} | | | |")
            continue
        cosine, agreement = _logit_cells(v, logits)
        print(f"| {v.target} | {_kept(run.folder / v.target)} | {cosine} | {agreement} | {v.status.value} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source")
    parser.add_argument("--calib")
    parser.add_argument("--data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", default="onnx,openvino,tflite")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--dynamic", default=None)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per latency mode (>= 200 runs)")
    parser.add_argument("--no-bench", action="store_true",
                        help="accuracy only: export and validate, no timing (e.g. on a machine that is busy)")
    parser.add_argument("--resume", action="store_true", help="reuse the targets a killed run had finished")
    parser.add_argument("--bench-only", action="store_true",
                        help="no export: bench the run already at --out (made with --no-bench) and print the table")
    args = parser.parse_args(argv)
    if not args.bench_only and not (args.source and args.calib and args.data):
        parser.error("--source, --calib and --data are required (except with --bench-only)")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    if not args.bench_only:
        backends, recipes = args.backends.split(","), args.recipes.split(",")
        profiles = [profile_for(b, r) for b in backends for r in recipes]
        run = export(args.source, profiles, args.out, calib=args.calib, data=args.data, dynamic=args.dynamic,
                     resume=args.resume, progress=lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
        if args.no_bench:
            return _accuracy_table(run)
    return _bench_table(args.out, args.seconds)


def _bench_table(folder: Path, seconds: float) -> int:
    result = bench(folder, timing=Timing(200, seconds, seconds, 1800), explain=False,
                   on_row=lambda d, t, m: print(f"  .. bench [{d}/{t}] {m}", file=sys.stderr, flush=True))
    rows = {r.target: r for r in result.rows}
    logits = result.reference.output_names[0]
    print(f"{result.reference.describe()}\n")
    print("| target | layers kept in float | p50 ms, 1 thread | p50 ms, all threads | vs own fp32 (1 thread) | "
          f"{logits} cosine (SQNR) | top-1 agreement | size MB | status |")
    print("|" + "---|" * 9)
    t = result.torch.measurement
    print(f"| torch eager fp32 | - | {t.latency_1t.median_ms:.2f} | {t.latency_all.median_ms:.2f} | - | 1 | 1 | "
          f"{t.artifact_bytes / 1e6:.1f} | - |")
    for row in result.rows:
        m, v = row.measurement, row.validation
        if m is None:
            print(f"| {row.target} | {v.stage.value}: {v.reason} |" + " |" * 7)
            continue
        fp32 = rows.get(f"{v.backend}-cpu-fp32")
        vs = "-" if fp32 is None or fp32 is row or fp32.measurement is None else \
            f"{fp32.measurement.latency_1t.median_ms / m.latency_1t.median_ms:.2f}x"
        cosine, agreement = _logit_cells(v, logits)
        print(f"| {row.target} | {_kept(folder / row.target)} | {m.latency_1t.median_ms:.2f} | "
              f"{m.latency_all.median_ms:.2f} ({m.threads_all}) | {vs} | {cosine} | {agreement} | "
              f"{m.artifact_bytes / 1e6:.1f} | {v.status.value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
