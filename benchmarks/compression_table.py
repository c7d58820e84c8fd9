"""Measure what compression does, on every backend, and print the markdown tables of docs/results/compression.md
(it does not write the page: the tables are pasted into it).

1. int8 (static, calibrated on sample_data's calib split) of every zoo model on every backend: val accuracy of
   torch fp32 and of the int8 artifact, file size against the fp32 artifact, attention agreement.
2. 30% and 50% structured channel pruning + recovery (fine-tune or distillation) of every zoo model: FLOPs,
   parameters, torch val accuracy (original, pruned, recovered), the val accuracy of each runtime's fp32 export of
   the recovered model, and batch-1 single-thread latency before/after on each runtime.

Usage: python benchmarks/compression_table.py [--out runs/compression] [--only int8|pruning] [--epochs N] [--models a,b]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from edgekit.api import RunResult, export
from edgekit.artifact import read_manifest
from edgekit.backends import get_backend
from edgekit.backends.execute import to_artifact_layout
from edgekit.bench.timing import measure
from edgekit.compress.recipe import CompressionRecipe
from edgekit.config import load_profile, parse_profile
from edgekit.reference import load_reference

BACKENDS = ("onnx", "openvino", "tflite")
MODELS = ("cnn", "attention", "transformer", "fusion")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def int8_table(out: Path) -> list[str]:
    lines = ["| model | backend | torch fp32 acc | int8 acc | drop (points) | int8 / fp32 file | "
             "logits top-1 agreement | attention cosine | attention max abs |", "|" + "---|" * 9]
    for model in MODELS:
        targets = [load_profile(f"{b}-cpu-int8") for b in BACKENDS]  # each int8 manifest records its fp32 size
        run = export(f"zoo:{model}", targets, out / f"int8-{model}", calib="task:calib")
        for backend in BACKENDS:
            row = next(r for r in run.rows if r.target == f"{backend}-cpu-int8")
            if row.stage is not None:
                lines.append(f"| {model} | {backend} | {pct(run.torch_accuracy)} | {row.stage.value}: {row.reason} |"
                             + " |" * 5)
                continue
            q = read_manifest(run.folder / row.target / "manifest.json")
            size = sum(f.bytes for f in q.files) / q.extra["quantization"]["fp32_bytes"]
            logits = next(s for s in row.outputs if s.name == "logits")
            att = next((s for s in row.outputs if s.name == "attention"), None)
            attention = f"{att.cosine:.4f} | {att.max_abs_error:.3f}" if att else "- | -"
            lines.append(f"| {model} | {backend} | {pct(run.torch_accuracy)} | {pct(row.accuracy)} | "
                         f"{100 * (run.torch_accuracy - row.accuracy):.1f} | {size:.2f}x | "
                         f"{logits.top1_agreement:.3f} | {attention} |")
    return lines


def single_thread(backend: str) -> object:
    base = load_profile(f"{backend}-cpu-fp32")
    text = base.text.replace("threads = 0", "threads = 1").replace(f'name = "{base.name}"',
                                                                    f'name = "{base.name}-1t"')
    return parse_profile(text)


def open_session(run_folder: Path, target: str):
    """The artifact's runtime session and a batch-1 input from the run's reference data, in the artifact's layout."""
    folder = run_folder / target
    manifest = read_manifest(folder / "manifest.json")
    session = get_backend(manifest.backend).open(folder, manifest)  # the profile's threads: 1
    reference = load_reference(run_folder / "reference.npz", "", tuple(i.name for i in manifest.inputs),
                               tuple(o.name for o in manifest.outputs), None)
    one = to_artifact_layout({k: v[:1] for k, v in reference.inputs.items()}, manifest)
    return lambda: session.run(one)


def latencies_ms(runs: dict[str, RunResult], rounds: int = 3) -> dict[tuple[str, str], float]:
    """(variant, target) -> batch-1 median latency, best of ``rounds`` interleaved rounds: the machine is shared,
    and a burst of other work then slows one round of one variant, not the comparison."""
    calls = {(variant, row.target): open_session(run.folder, row.target)
             for variant, run in runs.items() for row in run.rows if row.stage is None}
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for key, call in calls.items():
            best[key] = min(best.get(key, float("inf")), measure(call, min_runs=300).median_ms)
    return best


# (recovery, epochs) per model, chosen by measurement (lr 2e-3, one-cycle): see the README
RECOVERY = {"cnn": ("finetune", 30), "attention": ("finetune", 30), "transformer": ("distill", 40),
            "fusion": ("finetune", 10)}
RATIOS = (0.3, 0.5)


def pruning_rows(model: str, out: Path, epochs_override: int | None) -> list[str]:
    recover, epochs = RECOVERY[model]
    epochs = epochs_override or epochs
    profiles = [single_thread(b) for b in BACKENDS]
    runs = {"original": export(f"zoo:{model}", profiles, out / f"prune-{model}-base")}
    for ratio in RATIOS:
        runs[f"channels {ratio}"] = export(f"zoo:{model}", profiles, out / f"prune-{model}-channels-{ratio}",
                                           compression=CompressionRecipe.parse(f"channels:{ratio}", recover, epochs))
    ms = latencies_ms(runs)
    first = runs[f"channels {RATIOS[0]}"].compression
    lines = [f"| {model} | original | {first.params_before:,} | {first.flops_before:,} | "
             f"{pct(first.accuracy_before)} | " + " | ".join(runtime_cells(runs, "original", ms)) + " |"]
    for ratio in RATIOS:
        variant = f"channels {ratio}"
        c = runs[variant].compression
        lines.append(f"| {model} | {variant}, before recovery | | | {pct(c.accuracy_pruned)} |"
                     + " |" * (2 * len(BACKENDS)))
        lines.append(f"| {model} | {variant} + {recover} {epochs} ep | {c.params_after:,} | {c.flops_after:,} "
                     f"({c.flops_before / c.flops_after:.2f}x fewer) | {pct(c.accuracy_recovered)} | "
                     + " | ".join(runtime_cells(runs, variant, ms)) + " |")
    return lines


def runtime_cells(runs: dict[str, RunResult], variant: str, ms: dict[tuple[str, str], float]) -> list[str]:
    """Per runtime: the export's val accuracy (or the stage that failed) and its latency (speed-up vs original)."""
    cells = []
    for row in runs[variant].rows:
        if row.stage is not None:
            cells += [f"{row.stage.value}: {row.reason}", "-"]
            continue
        accuracy = pct(row.accuracy) + ("" if row.status.value == "PASS" else f" ({row.status.value})")
        latency = f"{ms[variant, row.target]:.3f}"
        if variant != "original" and ("original", row.target) in ms:
            latency += f" ({ms['original', row.target] / ms[variant, row.target]:.2f}x)"
        cells += [accuracy, latency]
    return cells


def pruning_table(out: Path, epochs_override: int | None, models: tuple[str, ...] = MODELS) -> list[str]:
    start = time.perf_counter()
    lines = ["| model | variant | params | FLOPs | torch acc | " + " | ".join(
        f"{b} acc | {b} ms" for b in BACKENDS) + " |", "|" + "---|" * (5 + 2 * len(BACKENDS))]
    for model in models:
        lines += pruning_rows(model, out, epochs_override)
        print(f"  .. {model} done at {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    lines.append(f"\n{len(models)} models x {len(RATIOS)} ratios in {(time.perf_counter() - start) / 60:.1f} min; "
                 "acc: val accuracy (%); ms: batch-1 single-thread median latency, best of 3 interleaved rounds")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compression"))
    parser.add_argument("--epochs", type=int, help="recovery epochs for every model (default: RECOVERY)")
    parser.add_argument("--only", choices=("int8", "pruning"))
    parser.add_argument("--models", default=",".join(MODELS), help="zoo models of the pruning table, comma-separated")
    args = parser.parse_args()
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    if args.only in (None, "int8"):
        print("\n".join(int8_table(args.out)), "\n", flush=True)
    if args.only in (None, "pruning"):
        print("\n".join(pruning_table(args.out, args.epochs, tuple(args.models.split(",")))), flush=True)


if __name__ == "__main__":
    main()
