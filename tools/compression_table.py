"""Measure what compression does, on every backend, and print the README's markdown tables.

1. int8 (static, calibrated on sample_data's calib split) of every zoo model on every backend: val accuracy of
   torch fp32 and of the int8 artifact, file size against the fp32 artifact, attention agreement.
2. 50% structured channel pruning + recovery (fine-tune or distillation) of SimpleCNN and TransformerClassifier:
   FLOPs, parameters, accuracy, and batch-1 single-thread latency before/after on each backend.

Usage: python tools/compression_table.py [--out runs/compression] [--only int8|pruning] [--epochs N]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgekit.api import export
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


def latency_ms(run_folder: Path, target: str) -> float:
    folder = run_folder / target
    manifest = read_manifest(folder / "manifest.json")
    session = get_backend(manifest.backend).open(folder, manifest)  # the profile's threads: 1
    reference = load_reference(run_folder / "reference.npz", "", tuple(i.name for i in manifest.inputs),
                               tuple(o.name for o in manifest.outputs), None)
    one = to_artifact_layout({k: v[:1] for k, v in reference.inputs.items()}, manifest)
    return measure(lambda: session.run(one), min_runs=300).median_ms


# measured best of finetune / distill at 30-40 epochs (lr 2e-3, one-cycle); see the README
RECOVERY = {"cnn": ("finetune", 30), "transformer": ("distill", 40)}


def pruning_table(out: Path, epochs_override: int | None) -> list[str]:
    lines = ["| model | variant | params | FLOPs | torch acc | " + " | ".join(
        f"{b} acc | {b} ms" for b in BACKENDS) + " |", "|" + "---|" * (5 + 2 * len(BACKENDS))]
    for model, (recover, epochs) in RECOVERY.items():
        epochs = epochs_override or epochs
        profiles = [single_thread(b) for b in BACKENDS]
        base = export(f"zoo:{model}", profiles, out / f"prune-{model}-base")
        pruned = export(f"zoo:{model}", profiles, out / f"prune-{model}-channels",
                        compression=CompressionRecipe.parse("channels:0.5", recover, epochs))
        c = pruned.compression
        for label, run, params, flops in (("original", base, c.params_before, c.flops_before),
                                          (f"channels 0.5 + {recover} {epochs} ep", pruned, c.params_after,
                                           c.flops_after)):
            cells = []
            for row in run.rows:
                cells += [pct(row.accuracy), f"{latency_ms(run.folder, row.target):.3f}"]
            lines.append(f"| {model} | {label} | {params:,} | {flops:,} | {pct(run.torch_accuracy)} | "
                         + " | ".join(cells) + " |")
        lines.append(f"| {model} | channels 0.5, before recovery | | | "
                     f"{pct(c.accuracy_pruned)} |" + " |" * (2 * len(BACKENDS)))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compression"))
    parser.add_argument("--epochs", type=int, help="recovery epochs for both models (default: RECOVERY)")
    parser.add_argument("--only", choices=("int8", "pruning"))
    args = parser.parse_args()
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    if args.only in (None, "int8"):
        print("\n".join(int8_table(args.out)), "\n", flush=True)
    if args.only in (None, "pruning"):
        print("\n".join(pruning_table(args.out, args.epochs)), flush=True)


if __name__ == "__main__":
    main()
