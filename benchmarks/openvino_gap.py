"""What edgekit's OpenVINO latency is made of, against benchmark_app's, on the same IR: one call path per row,
all in one process, each timed around the Python call (perf_counter, what `edgekit bench` reports) and inside it
(the C++ ``request.latency`` of the same call, what benchmark_app reports); benchmark_app itself runs between
rounds. The rows take turns in short blocks, so drift hits them alike while each timed call finds its model in
cache. Prints the markdown tables of docs/results/efficientnet-lite0.md ("What the difference was made of"); it
does not write the page: the tables are pasted into it.

Usage: python benchmarks/openvino_gap.py RUN/openvino-cpu-fp32 [RUN/openvino-cpu-int8 ...] [--threads 1 2]
                                    [--calls 100] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmark_app.py, beside this file

import benchmark_app  # noqa: E402

from edgekit.artifact import read_manifest  # noqa: E402
from edgekit.backends.openvino import BACKEND  # noqa: E402
from edgekit.backends.openvino_session import compile_config, core  # noqa: E402


def _compiled(xml: Path, config: dict, static: dict | None = None, u8: bool = False) -> ov.CompiledModel:
    model = core().read_model(str(xml))
    if static:
        model.reshape({k: ov.PartialShape(list(v.shape)) for k, v in static.items()})
    if u8:  # what benchmark_app runs without -ip f32: a u8 input and a conversion in the graph
        from openvino.preprocess import PrePostProcessor

        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8)
        model = ppp.build()
    return core().compile_model(model, "CPU", config)


def _before(compiled: ov.CompiledModel, one: dict):
    """edgekit's session before 2026-11-24: the dynamic-batch compile, inputs passed on every call, outputs copied
    twice (share_outputs=False, then np.array)."""
    request = compiled.create_infer_request()
    outputs = [(o, o.get_any_name()) for o in compiled.outputs]

    def call():
        result = request.infer(one, share_inputs=True)
        return {name: np.array(result[port]) for port, name in outputs}
    return call, request


def _preset(compiled: ov.CompiledModel, one: dict):
    """benchmark_app's loop: the input tensor set once, then infer() with no arguments."""
    request = compiled.create_infer_request()
    for name, array in one.items():
        request.set_tensor(name, ov.Tensor(array, shared_memory=True))
    return request.infer, request


def paths(folder: Path, threads: int, one: dict) -> dict:
    manifest = read_manifest(folder / "manifest.json")
    config, _ = compile_config(manifest.extra["runtime"], threads)
    xml = folder / manifest.model_file
    dynamic, static = _compiled(xml, config), _compiled(xml, config, one)
    session = BACKEND.open(folder, manifest, threads)
    no_hint = {**{k: v for k, v in config.items() if k != "PERFORMANCE_HINT"}, "NUM_STREAMS": "1"}
    u8 = {k: np.random.default_rng(0).integers(0, 256, v.shape, dtype=np.uint8) for k, v in one.items()}
    return {
        "edgekit before: dynamic-batch compile, infer(dict), 2 output copies": _before(dynamic, one),
        "dynamic-batch compile, input preset, infer()": _preset(dynamic, one),
        "batch-1 compile, infer(dict), 2 output copies": _before(static, one),
        "edgekit now: OpenVinoSession.run (batch-1 compile, input bound once, 1 output copy)":
            (lambda: session.run(one), session._static._request),
        "batch-1 compile, input preset, infer() (benchmark_app's loop)": _preset(static, one),
        "  same, PERFORMANCE_HINT unset + NUM_STREAMS=1": _preset(_compiled(xml, no_hint, one), one),
        "  same, ENABLE_CPU_PINNING=False": _preset(_compiled(xml, {**config, "ENABLE_CPU_PINNING": "False"}, one),
                                                   one),
        "  same, u8 input (benchmark_app without -ip f32)": _preset(_compiled(xml, config, one, u8=True), u8),
    }


def interleaved(rows: dict, calls: int, block: int = 20, warm: int = 3) -> dict[str, tuple[float, float]]:
    """(median outer ms, median inner ms) per row, ``calls`` each: the rows take turns (alternating order) in blocks
    of ``block`` timed calls, each block after ``warm`` untimed ones, so the timed calls find their model in cache
    as a loop over one model does (one call per turn would time every row with cold weights)."""
    for call, _ in rows.values():
        for _ in range(20):
            call()
    times: dict[str, tuple[list, list]] = {k: ([], []) for k in rows}
    order = list(rows)
    for turn in range(-(-calls // block)):
        for key in order if turn % 2 == 0 else order[::-1]:
            call, request = rows[key]
            for _ in range(warm):
                call()
            for _ in range(block):
                t0 = time.perf_counter()
                call()
                times[key][0].append((time.perf_counter() - t0) * 1e3)
                times[key][1].append(request.latency)
    return {k: (float(np.median(o)), float(np.median(i))) for k, (o, i) in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", type=Path)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for folder in args.targets:
        manifest = read_manifest(folder / "manifest.json")
        reference = np.load(folder.parent / "reference.npz")
        one = {s.name: np.ascontiguousarray(reference[f"input:{s.name}"][:1], dtype=s.dtype) for s in manifest.inputs}
        for threads in args.threads:
            rows = paths(folder, threads, one)
            measured: dict[str, list[tuple[float, float]]] = {k: [] for k in rows}
            native = []
            for _ in range(args.rounds):
                for key, value in interleaved(rows, args.calls).items():
                    measured[key].append(value)
                native.append(benchmark_app.run(folder / manifest.model_file, threads, 2).median_ms)
            base = statistics.median(o for o, _ in measured[next(iter(rows))])
            print(f"\n{folder.name}, {threads} thread(s), {args.rounds} rounds x {args.calls} calls per row "
                  f"(blocks of 20, rows in turn), load average {os.getloadavg()[0]:.2f}\n")
            print("| call path | ms around the Python call | ms inside infer() (request.latency) | difference | "
                  "vs edgekit before |")
            print("|---|---|---|---|---|")
            for key, values in measured.items():
                outer = statistics.median(o for o, _ in values)
                inner = statistics.median(i for _, i in values)
                print(f"| {key} | {outer:.3f} | {inner:.3f} | {outer - inner:.3f} | {outer / base:.3f} |")
            print(f"| benchmark_app -ip f32 (its own process), median of {args.rounds} runs | - | "
                  f"{statistics.median(native):.3f} | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
