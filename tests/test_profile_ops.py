"""Per-op profiles from each runtime's own profiler (a backend's ``profile_ops``): real op types, real times that
add up to about one inference, and the torch modules the ops came from."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.artifact import read_manifest
from edgekit.backends import get_backend
from edgekit.backends.execute import to_artifact_layout
from edgekit.bench.timing import measure

from .conftest import BACKENDS, fp32_profile

PROFILED = [b for b in BACKENDS if callable(getattr(get_backend(b), "profile_ops", None))]
RUNS = 30
ATTEMPTS = 3


def test_the_profiled_backends_are_the_ones_with_a_profiler():
    assert {"onnx", "openvino"} <= set(PROFILED)


@pytest.mark.parametrize("name", PROFILED)
def test_profile_ops_of_the_cnn(zoo_run, name):
    folder = zoo_run("cnn").folder / fp32_profile(name)
    manifest = read_manifest(folder / "manifest.json")
    backend = get_backend(name)
    with np.load(folder.parent / "reference.npz", allow_pickle=False) as z:
        one = to_artifact_layout({k[len("input:"):]: z[k][:1] for k in z.files if k.startswith("input:")}, manifest)

    ops = backend.profile_ops(folder, manifest, one, 1, RUNS)

    assert ops, name
    for op in ops:
        assert len(op) == 4 and isinstance(op[0], str) and isinstance(op[1], str)
        assert op[2] is None or isinstance(op[2], str)
        assert op[3] > 0, op
    types = [op_type for _, op_type, _, _ in ops]
    assert any("conv" in t.lower() for t in types), types  # the runtime's own op names: Conv, Convolution, ...
    assert {"trunk.conv1", "trunk.conv2"} & {module for _, _, module, _ in ops}, ops
    session = backend.open(folder, manifest, 1)
    # the profile is a mean (one preempted run counts in full), the latency a median: on a shared machine a
    # pair of them can be taken at different loads, so up to three pairs are taken and the closest one counts
    pairs = []
    for _ in range(ATTEMPTS):
        latency = measure(lambda: session.run(one), min_runs=100, min_seconds=0.1).median_ms
        pairs.append((sum(ms for *_, ms in ops), latency))
        if 0.1 * latency <= pairs[-1][0] <= 3 * latency:
            break
        ops = backend.profile_ops(folder, manifest, one, 1, RUNS)
    total, latency = pairs[-1]
    assert 0.1 * latency <= total <= 3 * latency, pairs
