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
    # the unit, not the speed: the ops' times are milliseconds like the latency. A ratio tighter than 100x failed
    # on a loaded machine (a profile is a mean that a preempted run inflates, the latency a median); a slip of
    # units is 1000x
    session = backend.open(folder, manifest, 1)
    latency = measure(lambda: session.run(one), min_runs=100, min_seconds=0.1).median_ms
    total = sum(ms for *_, ms in ops)
    assert latency / 100 <= total <= 100 * latency, (total, latency)
