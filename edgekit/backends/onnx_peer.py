"""The onnx backend's stock int8 peer: onnxruntime's own static quantization of edgekit's fp32 .onnx, as its
documentation shows it (``quant_pre_process``, then ``quantize_static`` to QDQ with uint8 activations, int8
per-channel weights and MinMax calibration, a CalibrationDataReader giving one sample per call), nothing else set.
The int8 peers benchmark compares edgekit's onnx-cpu-int8 with it."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

if TYPE_CHECKING:
    from edgekit.data.calib import CalibrationData

SETTINGS = {"preprocess": "quant_pre_process (defaults)", "quant_format": "QDQ", "activation_type": "QUInt8",
            "weight_type": "QInt8", "per_channel": True, "calibrate_method": "MinMax", "calibration_batch": 1}


class _OneSampleReader(CalibrationDataReader):
    def __init__(self, calib: CalibrationData) -> None:
        self._samples = iter(list(calib.batches(1)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._samples, None)


def stock_int8(fp32: Path, out: Path, calib: CalibrationData) -> dict:
    """Write the stock int8 model of the fp32 model ``fp32`` to ``out``; the settings it was made with."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(out), _OneSampleReader(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    return SETTINGS
