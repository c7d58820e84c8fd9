"""The tflite backend's stock int8 peer: ai-edge-quantizer's default static int8 recipe on edgekit's fp32 .tflite,
as its README and its MNIST example show it: ``Quantizer(model)``, ``load_quantization_recipe(
recipe.static_wi8_ai8())``, ``calibrate({signature: samples})``, ``quantize(result).export_model(path)``, every
default kept (its calibration's moving-average min/max, its I/O types). The int8 peers benchmark compares edgekit's
tflite-cpu-int8 with it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.backends.tflite_quant import calibration_batches

if TYPE_CHECKING:
    from edgekit.data.calib import CalibrationData

os.environ.setdefault("TQDM_DISABLE", "1")
SETTINGS = {"recipe": "static_wi8_ai8()", "algorithm": "min_max_uniform_quantize",
            "calibrate": "Quantizer.calibrate(defaults), every signature on the same samples at its batch size",
            "io": "int8, the recipe's default: edgekit's session quantizes the float inputs and dequantizes the "
                  "outputs with the model's own scales (tflite_session.quantized_io)"}


def stock_int8(fp32: Path, out: Path, calib: CalibrationData, input_names: tuple[str, ...], layout: str) -> dict:
    """Write the stock int8 model of the fp32 model ``fp32`` to ``out``; the settings it was made with."""
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(fp32))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    result = q.calibrate(calibration_batches(fp32, calib, input_names, layout))
    q.quantize(result).export_model(str(out), overwrite=True)
    os.chmod(out, 0o644)  # export_model marks the file executable
    return SETTINGS
