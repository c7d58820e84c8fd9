"""The executorch backend's stock int8 peer: ExecuTorch's documented PT2E flow for XNNPACK on the torch model
(ExecuTorch quantizes in torch, so this peer starts from the model, not from the fp32 .pte): ``torch.export`` at the
example inputs, ``XNNPACKQuantizer`` with ``get_symmetric_quantization_config(is_per_channel=True)`` and nothing
else, ``prepare_pt2e``, calibration, ``convert_pt2e``, then ``to_edge_transform_and_lower`` with an
``XnnpackPartitioner``. The int8 peers benchmark compares edgekit's executorch-cpu-int8 with it."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from edgekit.backends.common import resized_example

if TYPE_CHECKING:
    from edgekit.data.calib import CalibrationData
    from edgekit.spec import ModelSpec

SETTINGS = {"quantizer": "XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))",
            "flow": "torch.export.export -> prepare_pt2e -> calibrate -> convert_pt2e (torchao)",
            "lowering": "to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()]).to_executorch()"}


def _examples(spec: ModelSpec, batch: int, length: int | None) -> tuple[torch.Tensor, ...]:
    axes = spec.length_axes()
    return tuple(resized_example(t, batch, axes.get(i, ()), length) for i, t in enumerate(spec.example_inputs))


def stock_int8(spec: ModelSpec, methods: dict[str, tuple[int, int | None]], calib: CalibrationData
               ) -> tuple[bytes, dict]:
    """The .pte of the stock int8 model, one method per (batch, length) of ``methods`` (quantized at the first,
    which is exported at its own shapes and calibrated in batches of its size); the settings."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch, length = next(iter(methods.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantizer = XNNPACKQuantizer()
        quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(spec.module, _examples(spec, batch, length)).module(), quantizer)
        with torch.no_grad():
            for feed in calib.batches(batch):
                if len(next(iter(feed.values()))) == batch:
                    prepared(*(torch.from_numpy(feed[name]) for name in spec.input_names))
        converted = convert_pt2e(prepared)
        programs = {name: torch.export.export(converted, _examples(spec, b, n)) for name, (b, n) in methods.items()}
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    return bytes(edge.to_executorch().buffer), {**SETTINGS, "calibration_batch": batch}
