"""Per-node time from OpenVINO's own performance counters (``PERF_COUNT``): the compiled model of the bench
session, the same properties plus counters, one infer request; ``get_profiling_info`` after every inference
(it describes the last one) summed over the runs. The CPU plugin fuses ops into one node that keeps one
friendly name (a Convolution with its Relu), and adds nodes of its own (layout Reorders, quantization
subgraphs) named after the op they serve: those take that op's torch module."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import openvino as ov

EXECUTED = ov.ProfilingInfo.Status.EXECUTED


def _fx_name(name: str) -> str:
    """convert_model names an op "<FX node>/<aten op>/<OpenVINO op>"; what the CPU plugin adds keeps the prefix."""
    return name.split("/")[0]


def module_path(name: str, paths: dict[str, str | None], by_fx: dict[str, str | None]) -> str | None:
    if paths.get(name) is not None:
        return paths[name]
    return by_fx.get(_fx_name(name))


def profile(compiled: ov.CompiledModel, paths: dict[str, str | None], inputs: dict[str, np.ndarray], runs: int,
            warmup: int = 5) -> list[tuple[str, str, str | None, float]]:
    """(node, node type, torch module or None, mean ms per inference) of every node the plugin executed, over
    ``runs`` inferences after ``warmup`` (a node the counters give no time in any run is left out). ``paths``:
    each op's friendly name -> its torch module."""
    by_fx: dict[str, str | None] = {}
    for name, path in paths.items():
        if path is not None:
            by_fx.setdefault(_fx_name(name), path)
    request = compiled.create_infer_request()
    for _ in range(warmup):
        request.infer(inputs)
    totals: dict[str, float] = defaultdict(float)
    kinds: dict[str, str] = {}
    for _ in range(runs):
        request.infer(inputs)
        for info in request.get_profiling_info():
            if info.status == EXECUTED:
                totals[info.node_name] += info.real_time.total_seconds() * 1000
                kinds[info.node_name] = info.node_type
    return [(name, kinds[name], module_path(name, paths, by_fx), ms / runs) for name, ms in totals.items()
            if ms > 0]
