"""Minimal repro, onnxruntime's static QDQ quantizer: a LayerNorm over (C, H, W) fails with per-channel weights.

Found by `edgekit fuzz --models 30 --int8 --seed 7` (8 of 30 models, every one with a layernorm over C,H,W; an
onnx-cpu-int8 QUANTIZE row). Run: python benchmarks/repros/ort_qdq_layernorm_chw.py. onnxruntime 1.32.0 raises
"The truth value of an array with more than one element is ambiguous" in
qdq_quantizer._adjust_weight_scale_for_int32_bias: the LayerNorm's bias is (C, H, W) while its per-channel scale
is (C,). On fuzz model 7, QDQDisableWeightAdjustForInt32Bias only moved the failure ("operands could not be
broadcast together with shapes (1,12,18) (12,)"). With per_channel=False it quantizes (printed first)."""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static


class _Reader(CalibrationDataReader):
    def __init__(self) -> None:
        self.samples = iter([{"x": np.random.default_rng(i).standard_normal((1, 1, 6, 6), np.float32)}
                             for i in range(8)])

    def get_next(self):
        return next(self.samples, None)


def main() -> int:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 12, 3, padding=1), torch.nn.LayerNorm([12, 6, 6])).eval()
    work = Path(tempfile.mkdtemp())
    torch.onnx.export(model, (torch.randn(1, 1, 6, 6),), str(work / "m.onnx"), input_names=["x"], dynamo=True)
    outcome = 0
    for per_channel in (False, True):
        try:
            quantize_static(str(work / "m.onnx"), str(work / f"q{per_channel}.onnx"), _Reader(),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            print(f"per_channel={per_channel}: quantized")
        except Exception as exc:  # the repro: print what onnxruntime raised
            print(f"per_channel={per_channel}: {type(exc).__name__}: {exc}")
            outcome = 1
    return outcome


if __name__ == "__main__":
    sys.exit(main())
