"""GPTQ weight rounding (edgekit.quantize.gptq): the weights land on the int8 grid every backend's quantizer
uses, the layer outputs move less than with nearest rounding on held-out real data, and the grid survives a
backend's own quantizer."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgekit.api import export
from edgekit.data.calib import load_calibration
from edgekit.data.sources import InputInfo, load_data
from edgekit.quantize.gptq import QMAX, cached_gptq, gptq, grid_scale, nearest, weight_layers
from edgekit.zoo import load


def _outputs(module: torch.nn.Module, data, names) -> np.ndarray:
    with torch.no_grad():
        out = module(*(torch.from_numpy(data.inputs[n]) for n in names))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


@pytest.mark.parametrize("model", ["fusion", "cnn"])
def test_gptq_weights_are_on_the_grid_and_closer_than_nearest_on_held_out_data(model):
    spec = load(model)
    info = InputInfo.of(spec)
    calib = load_calibration("task:calib", info, 200)
    held_out = load_data("task:val", info, "--data", 300)
    rounded, record = gptq(spec, calib)
    assert record.layers and not record.skipped, record.skipped
    for name, layer in weight_layers(rounded.module).items():
        levels = layer.weight.detach().reshape(len(layer.weight), -1) / grid_scale(layer.weight, True)
        assert torch.allclose(levels, torch.round(levels), atol=1e-3), name
        # every channel's largest weight is +-127, so a runtime's max / 127 scale is the one rounded to
        assert torch.all(levels.abs().amax(dim=1) > QMAX - 1e-3), name
    original = dict(spec.module.named_parameters())
    assert all(torch.equal(p, original[n]) for n, p in load(model).module.named_parameters())  # untouched
    names = spec.input_names
    ref = _outputs(spec.module, held_out, names)
    err_gptq = np.mean((_outputs(rounded.module, held_out, names) - ref) ** 2)
    err_nearest = np.mean((_outputs(nearest(spec.module), held_out, names) - ref) ** 2)
    assert err_gptq < 0.8 * err_nearest, (err_gptq, err_nearest)


def test_keep_float_layers_keep_their_weights():
    spec = load("cnn")
    calib = load_calibration("task:calib", InputInfo.of(spec), 64)
    rounded, record = cached_gptq(spec, calib, per_channel=True, keep_float=("^fc2$",))
    assert "fc2" not in record.layers and "fc1" in record.layers
    assert torch.equal(rounded.module.fc2.weight, spec.module.fc2.weight)
    assert not torch.equal(rounded.module.fc1.weight, spec.module.fc1.weight)


def test_the_runtime_quantizer_keeps_the_gptq_levels(tmp_path):
    """onnxruntime's own per-channel quantizer, run on the exported rounded weights, stores exactly those values
    (its int8 levels times its scales), and the manifest says how they were rounded."""
    result = export("zoo:cnn", "onnx-cpu-int8", tmp_path / "run", calib="task:calib")
    assert result.rows[0].status.value in ("PASS", "WARN"), result.rows[0].reason
    folder = tmp_path / "run" / "onnx-cpu-int8"
    manifest = json.loads((folder / "manifest.json").read_text())
    rounding = manifest["extra"]["quantization"]["weight_rounding"]
    assert rounding["method"] == "gptq" and rounding["layers"] == len(weight_layers(load("cnn").module))
    spec = load("cnn")
    calib = load_calibration("task:calib", InputInfo.of(spec), 200)
    rounded, _ = cached_gptq(spec, calib, per_channel=True)
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(folder / "model.onnx")).graph.initializer}
    dequantized = []
    for name in (n.removesuffix("_quantized") for n in stored if n.endswith("_quantized")):
        if f"{name}_scale" not in stored:  # an int32 bias
            continue
        levels, scale = stored[f"{name}_quantized"].astype(np.float32), stored[f"{name}_scale"]
        # the channel axis is the one the scales run along (a Linear can be a Gemm or a MatMul of its transpose)
        axis = next(a for a, n in enumerate(levels.shape) if n == scale.size)
        shape = [1] * levels.ndim
        shape[axis] = -1
        dequantized.append(levels * scale.reshape(shape))
    for name, layer in weight_layers(rounded.module).items():
        weight = layer.weight.detach().numpy()
        assert any(np.allclose(d, w, rtol=1e-5, atol=1e-7) for d in dequantized for w in (weight, weight.T)
                   if d.shape == w.shape), f"{name}: no int8 initializer holds its GPTQ levels"


def test_per_tensor_rounding_keeps_one_scale_per_layer():
    spec = load("cnn")
    rounded, _ = gptq(spec, load_calibration("task:calib", InputInfo.of(spec), 64), per_channel=False)
    for name, layer in weight_layers(rounded.module).items():
        levels = layer.weight.detach().reshape(len(layer.weight), -1) / grid_scale(layer.weight, False)
        assert torch.allclose(levels, torch.round(levels), atol=1e-3), name
        assert abs(levels.abs().max().item() - QMAX) < 1e-3, name
