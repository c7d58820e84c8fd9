"""Per-node time from onnxruntime's own profiler (``SessionOptions.enable_profiling``): the session is opened with
the bench session's options plus profiling, run, and the JSON trace it writes is read back. onnxruntime names the
nodes of its optimized graph, not the exported ones (a Conv fused with its Relu and moved to NCHWc is
"relu_nchwc"); each is traced back to the exported node it came from, and from there to its torch module."""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgekit.backends.onnx_session import DISABLED_OPTIMIZERS

KERNEL_SUFFIX = "_kernel_time"
# what onnxruntime's graph optimizers add to the name of a node they fuse, split or re-lay out
_FUSED_PREFIX = "fused "
_DECORATION = re.compile(r"(_token_\d+|_nchwc|_fused|/[A-Za-z]+Fusion/?)$")  # "node_matmul/MatMulScaleFusion/"
_LOOK_BACK = 3  # exported nodes to walk back from a fused node's last one to the one whose kind it runs


class ExportedGraph:
    """The exported graph's nodes by name, the node that makes each value, and the torch module of each node."""

    def __init__(self, graph: onnx.GraphProto, node_paths: dict[str, str | None]) -> None:
        self.nodes = {n.name: n for n in graph.node}
        self.producer = {out: n for n in graph.node for out in n.output if out}
        self.paths = node_paths

    def anchor(self, name: str) -> onnx.NodeProto | None:
        """The exported node an optimized node's name points at: its own name, or the value it writes (onnxruntime
        names a node made by fusion or layout changes after the output it produces), once decorations are off."""
        candidate = name.removeprefix(_FUSED_PREFIX)
        while True:
            if candidate in self.nodes:
                return self.nodes[candidate]
            if candidate in self.producer:
                return self.producer[candidate]
            stripped = _DECORATION.sub("", candidate)
            if stripped == candidate:
                return None
            candidate = stripped

    def module_path(self, name: str, op_type: str) -> str | None:
        """The torch module of an optimized node: of the exported node whose op kind it runs (a FusedConv or an
        NCHWc Conv named after its Relu is the convolution's module), found walking back from the anchor along
        first inputs; the anchor's own module when none matches; None when the name points nowhere (a reorder
        or transpose that onnxruntime inserted)."""
        node = anchor = self.anchor(name)
        for _ in range(_LOOK_BACK + 1):
            if node is None:
                break
            if node.op_type in op_type:  # Conv in QLinearConv, Gemm in FusedGemm, MaxPool in NhwcMaxPool
                return self.paths[node.name]
            node = self.producer.get(node.input[0]) if node.input else None
        return None if anchor is None else self.paths[anchor.name]


def kernel_times(events: list[dict], runs: int) -> dict[str, tuple[str, float]]:
    """Node name -> (op type, total microseconds) over the last ``runs`` ``model_run`` events of a trace (the
    warm-up runs before them are left out)."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) < runs:
        raise RuntimeError(f"the onnxruntime trace holds {len(starts)} runs, {runs} expected")
    since = starts[-runs]
    totals: dict[str, float] = defaultdict(float)
    kinds: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith(KERNEL_SUFFIX) and e["ts"] >= since:
            name = e["name"][:-len(KERNEL_SUFFIX)]
            totals[name] += e["dur"]
            kinds[name] = e.get("args", {}).get("op_name", "?")
    return {name: (kinds[name], us) for name, us in totals.items()}


def profile(model_path: Path, options: ort.SessionOptions, providers: list[str], graph: ExportedGraph,
            inputs: dict[str, np.ndarray], runs: int, warmup: int = 5) -> list[tuple[str, str, str | None, float]]:
    """(node, op type, torch module or None, mean ms per inference) of every kernel onnxruntime ran, over
    ``runs`` runs after ``warmup``, with ``options`` (the bench session's) and profiling on. The trace counts
    whole microseconds: a node under 1 us in every run is left out."""
    with tempfile.TemporaryDirectory(prefix="edgekit-ort-profile-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(model_path), options, providers=providers,
                                       disabled_optimizers=DISABLED_OPTIMIZERS)
        for _ in range(warmup + runs):
            session.run(None, inputs)
        trace = session.end_profiling()
        events = json.loads(Path(trace).read_text(encoding="utf-8"))
    return [(name, op_type, graph.module_path(name, op_type), us / runs / 1000)
            for name, (op_type, us) in kernel_times(events, runs).items() if us > 0]
