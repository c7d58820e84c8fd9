"""OpenVINO's ``benchmark_app``, run on an IR and read back: the statistics it prints at the end (Step 11/11).

benchmark_app prints every latency line in one unit, chosen by the average: ``us`` below 1 ms, else ``ms``
(openvino/tools/benchmark/main.py, ``format_console_latency``); the median line reads ``NN percentile:`` when
``-latency_percentile`` is not 50, and a model run with several input shapes gets a second block per shape group,
which is not read here (the first block is the whole run).

bench_efficientnet.py and openvino_gap.py import it; on its own it prints the statistics as JSON:

    python benchmarks/benchmark_app.py MODEL.xml [--threads 1] [--seconds 3]
    python benchmarks/benchmark_app.py --parse < saved_benchmark_app_output.txt
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TO_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_LATENCY = re.compile(r"^(?:\[ INFO \])?\s*(Median|Average|Min|Max|(\d+) percentile):"
                      r"\s+([\d.]+)\s*(ns|us|µs|ms|s)\s*$")
_THROUGHPUT = re.compile(r"^(?:\[ INFO \])?\s*Throughput:\s+([\d.]+)\s*FPS\s*$")
_COUNT = re.compile(r"^(?:\[ INFO \])?\s*Count:\s+(\d+) iterations\s*$")


@dataclass(frozen=True)
class BenchmarkAppReport:
    median_ms: float  # the -latency_percentile line (50: "Median")
    percentile: int
    average_ms: float | None
    min_ms: float | None
    max_ms: float | None
    throughput_fps: float | None
    iterations: int | None


def parse_report(text: str) -> BenchmarkAppReport:
    """The latency statistics of benchmark_app's output, in ms whatever unit it printed. ValueError without a
    latency line."""
    found: dict[str, float] = {}
    percentile = 50
    throughput = iterations = None
    for line in text.splitlines():
        line = line.strip()
        if (m := _LATENCY.match(line)) is not None:
            key = "median" if m.group(2) or m.group(1) == "Median" else m.group(1).lower()
            if key in found:  # a later block: the per-shape-group statistics
                continue
            found[key] = float(m.group(3)) * TO_MS[m.group(4)]
            if m.group(2):
                percentile = int(m.group(2))
        elif (m := _THROUGHPUT.match(line)) is not None and throughput is None:
            throughput = float(m.group(1))
        elif (m := _COUNT.match(line)) is not None and iterations is None:
            iterations = int(m.group(1))
    if "median" not in found:
        raise ValueError("no latency median or percentile line in benchmark_app's output")
    return BenchmarkAppReport(found["median"], percentile, found.get("average"), found.get("min"), found.get("max"),
                              throughput, iterations)


def tool() -> str:
    return shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")


def command(xml: Path, threads: int, seconds: int) -> list[str]:
    """Batch 1, one synchronous request, ``threads`` threads, f32 compute, and f32 input: without ``-ip f32``
    benchmark_app feeds a 3-channel image input as u8 and adds a u8 -> f32 conversion to the graph."""
    return [tool(), "-m", str(xml), "-d", "CPU", "-b", "1", "-api", "sync", "-hint", "none", "-nstreams", "1",
            "-nthreads", str(threads), "-t", str(seconds), "-infer_precision", "f32", "-ip", "f32"]


def run(xml: Path, threads: int, seconds: int) -> BenchmarkAppReport:
    """Run benchmark_app on ``xml``; RuntimeError (with the tail of its output) when it fails or prints no
    statistics."""
    done = subprocess.run(command(xml, threads, seconds), capture_output=True, text=True)
    try:
        if done.returncode != 0:
            raise ValueError(f"exit code {done.returncode}")
        return parse_report(done.stdout)
    except ValueError as exc:
        tail = " ".join((done.stdout + done.stderr).split())[-300:]
        raise RuntimeError(f"benchmark_app failed ({exc}): {tail}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="an OpenVINO IR (.xml) to run benchmark_app on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--parse", action="store_true", help="read a saved benchmark_app output from stdin instead")
    args = parser.parse_args(argv)
    if (args.model is None) == (not args.parse):
        parser.error("give either MODEL.xml or --parse")
    try:
        report = parse_report(sys.stdin.read()) if args.parse else run(args.model, args.threads, args.seconds)
    except (ValueError, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
