"""PT2E static int8 for the executorch backend: torch.export the float module with a dynamic batch, annotate it
with the XNNPACK quantizer, calibrate on the calibration data, convert. The result is still a torch module (with
quantize / dequantize ops around the int8 patterns), lowered to XNNPACK by the backend like the float one."""
from __future__ import annotations

import dataclasses
import re
import warnings
from typing import TYPE_CHECKING

import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from torchao.quantization.pt2e import MinMaxObserver
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from edgekit.backends.common import batch_dynamic_shapes
from edgekit.config import QuantRecipe

if TYPE_CHECKING:
    from edgekit.data.calib import CalibrationData
    from edgekit.spec import ModelSpec

CALIBRATION_BATCH = 32
# torch.export's placeholder for a node outside any module
_NO_MODULE = "_empty_nn_module_stack_from_metadata_hook"


def _config(recipe: QuantRecipe):
    """XNNPACK's symmetric int8 config, with min/max activation observers: its default (a histogram observer)
    is not the profile's ``method = "minmax"``."""
    config = get_symmetric_quantization_config(is_per_channel=recipe.per_channel)
    minmax = dataclasses.replace(config.input_activation,
                                 observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
    return dataclasses.replace(config, input_activation=minmax, output_activation=minmax)


def _module_paths(node: torch.fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _ in stack.values() if path != _NO_MODULE]


def _keep_float_filter(patterns: tuple[str, ...]):
    """Quantize a node unless a module it sits in matches one of ``patterns`` (edgekit's FlatOutputs wrapper
    prefixes paths with "module.": both spellings match)."""
    def quantize_it(node: torch.fx.Node) -> bool:
        paths = _module_paths(node)
        names = paths + [p.removeprefix("module.") for p in paths]
        return not any(re.search(pattern, name) for pattern in patterns for name in names)
    return quantize_it


def kept_float_modules(module: torch.fx.GraphModule, patterns: tuple[str, ...]) -> list[str]:
    """The module paths that the keep_float patterns left in float, for the manifest."""
    quantized = _keep_float_filter(patterns)
    return sorted({_module_paths(n)[-1] for n in module.graph.nodes
                   if n.op == "call_function" and _module_paths(n) and not quantized(n)})


def _calibrate(prepared: torch.fx.GraphModule, calib: CalibrationData, input_names: tuple[str, ...]) -> None:
    with torch.no_grad():
        for batch in calib.batches(CALIBRATION_BATCH):
            prepared(*(torch.from_numpy(batch[name]) for name in input_names))


def quantize(spec: ModelSpec, recipe: QuantRecipe, calib: CalibrationData) -> tuple[torch.fx.GraphModule, dict]:
    """The calibrated, converted module and what reached the quantizer (for the manifest)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=batch_dynamic_shapes(spec))
        quantizer = XNNPACKQuantizer().set_global(_config(recipe))
        if recipe.keep_float:
            quantizer.set_filter_function(_keep_float_filter(recipe.keep_float))
        graph = program.module()
        kept = kept_float_modules(graph, recipe.keep_float) if recipe.keep_float else []
        prepared = prepare_pt2e(graph, quantizer)
        _calibrate(prepared, calib, spec.input_names)
        converted = convert_pt2e(prepared)
    applied = {"quantizer": "XNNPACKQuantizer (PT2E, torchao prepare_pt2e / convert_pt2e)", "method": "minmax",
               "per_channel": recipe.per_channel, "weights": "int8 symmetric", "activations": "int8 (calibrated)",
               "kept_float_modules": kept}
    return converted, applied
