"""The per-layer ledger on real artifacts: zoo:cnn exported to every backend's fp32 profile that has
intermediates, then a run whose artifacts come from the same model with conv2's weights scaled by 10 (a real
artifact on its real runtime, its torch reference the unbroken model): the ledger must name that layer."""
from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from edgekit.api import export
from edgekit.backends import get_backend
from edgekit.config import load_profile
from edgekit.errors import EdgekitError
from edgekit.ledger import LAYER_GATES_DB, ledger

from .conftest import BACKENDS, fp32_profile


def _supported() -> list[str]:
    found = []
    for name in BACKENDS:
        try:
            if hasattr(get_backend(name), "intermediates"):
                found.append(name)
        except EdgekitError:
            continue
    return found


SUPPORTED = _supported()
BROKEN = textwrap.dedent('''
    import torch
    from edgekit import zoo

    def build():
        spec = zoo.load("cnn")
        with torch.no_grad():
            spec.module.trunk.conv2.weight.mul_(10)
        return spec
''')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    profiles = [load_profile(fp32_profile(b)) for b in SUPPORTED]
    good = export("zoo:cnn", profiles, root / "good")
    (root / "broken.py").write_text(BROKEN)
    broken = export(f"{root / 'broken.py'}:build", profiles, root / "broken_src")
    assert not good.failed
    # the good run's record and reference (torch: unbroken), the broken model's artifacts
    planted = root / "planted"
    shutil.copytree(root / "good", planted)
    for p in profiles:
        shutil.rmtree(planted / p.name)
        shutil.copytree(broken.folder / p.name, planted / p.name)
    return root / "good", planted


def test_every_backend_with_intermediates_is_covered():
    assert {"onnx", "openvino", "tflite"} <= set(SUPPORTED)


def test_fp32_layers_match_torch_closely(runs):
    good, _ = runs
    result = ledger(good, samples=4)
    modules = [m[0] for m in result.modules]
    assert modules[:3] == ["trunk.conv1", "trunk.conv2", "trunk"] and modules[-1] == ""
    for t in result.targets:
        assert t.status == "ok", t
        assert len(t.layers) >= 2 and "" in t.layers and "trunk" in t.layers
        if t.backend in ("onnx", "openvino"):  # every module's output is a tensor of the graph
            assert not t.unmatched, t.unmatched
        assert t.first_divergence is None
        assert min(s.sqnr_db for s in t.layers.values()) > LAYER_GATES_DB["fp32"]
    written = json.loads((good / "ledger.json").read_text())
    assert [t["target"] for t in written["targets"]] == [t.target for t in result.targets]
    assert "| trunk.conv1 |" in (good / "ledger.md").read_text()


def test_a_broken_layer_is_named_first(runs):
    _, planted = runs
    result = ledger(planted, samples=4)
    for t in result.targets:
        assert t.status == "ok", t
        # conv1 is untouched; conv2 itself where the runtime has its output, else the first layer after it
        if "trunk.conv1" in t.layers:
            assert t.layers["trunk.conv1"].sqnr_db > LAYER_GATES_DB["fp32"]
        expected = "trunk.conv2" if "trunk.conv2" in t.layers else "trunk"
        assert t.first_divergence == expected, (t.target, t.first_divergence)
        assert t.layers[expected].sqnr_db < 10
        assert t.contributors[0][0] == expected


def test_cli_prints_the_table(runs, capsys):
    from edgekit.cli import main

    good, _ = runs
    assert main(["ledger", str(good), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "trunk.conv2" in out and "first diverging layer none" in out


def test_a_batch_norm_folded_into_a_convolution_is_compared_at_the_norm():
    """OpenVINO names a convolution whose weights carry the following batch norm's scale after the convolution;
    that tensor is not the convolution's output, so the ledger compares at the norm instead. A convolution whose
    output is simply wrong (no norm after it) is still compared and found."""
    import numpy as np

    from edgekit.ledger import compare_layers

    rng = np.random.default_rng(0)
    conv = rng.normal(size=(2, 4, 5, 5)).astype(np.float32)
    scale, shift = rng.uniform(0.2, 3, size=(1, 4, 1, 1)), rng.normal(size=(1, 4, 1, 1))
    norm = (conv * scale + shift).astype(np.float32)
    layers = [("conv", "Conv2d", conv), ("bn", "BatchNorm2d", norm)]
    folded = [("conv_out", "conv", (conv * scale).astype(np.float32)), ("bn_out", "bn", norm)]
    compared, unmatched = compare_layers(layers, folded)
    assert "conv" not in compared and "bn folded into it" in unmatched["conv"]
    assert compared["bn"].sqnr_db > 100
    broken = [("conv_out", "conv", conv * 10), ("relu_out", "relu", np.maximum(conv, 0))]
    compared, _ = compare_layers([("conv", "Conv2d", conv), ("relu", "ReLU", np.maximum(conv, 0))], broken)
    assert compared["conv"].sqnr_db < 0  # ten times too large, and compared as such
