"""The openvino backend's stock int8 peer: NNCF's post-training quantization of edgekit's fp32 IR as OpenVINO's
"basic quantization flow" shows it: ``nncf.quantize(model, nncf.Dataset(samples))`` with every default (preset,
subset size, fast bias correction, model type), then ``ov.save_model`` with its defaults. The int8 peers benchmark
compares edgekit's openvino-cpu-int8 with it."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import openvino as ov

from edgekit.backends.openvino_session import core

if TYPE_CHECKING:
    from edgekit.data.calib import CalibrationData

logging.getLogger("nncf").setLevel(logging.ERROR)
SETTINGS = {"call": "nncf.quantize(model, nncf.Dataset(samples))", "preset": None, "subset_size": 300,
            "fast_bias_correction": True, "model_type": None, "target_device": "ANY", "calibration_batch": 1,
            "save": "ov.save_model(model, path) (defaults: compress_to_fp16=True)"}


def stock_int8(fp32: Path, out: Path, calib: CalibrationData) -> dict:
    """Write the stock int8 IR of the fp32 IR ``fp32`` to ``out`` (.xml, its .bin beside); the settings."""
    import nncf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = core().read_model(str(fp32))
        quantized = nncf.quantize(model, nncf.Dataset(list(calib.batches(1))))
    ov.save_model(quantized, str(out))
    return SETTINGS
