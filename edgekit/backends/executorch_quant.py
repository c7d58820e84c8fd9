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
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation
from torchao.quantization.pt2e import MinMaxObserver
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

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


def _attention_masks(module: torch.fx.GraphModule) -> set[torch.fx.Node]:
    """Additive attention masks: float tensors made from integer inputs and constants alone (no float input and no
    parameter upstream) that hold a huge negative number where padding is (the lowest float, or -10000). No int8
    scale fits both that and the scores it is added to: XNNPACK's quantizer gave a BERT's scores + mask a scale of
    ~1e36, and its attention maps went flat (a small trained BERT classifier: attention cosine 0.77 against torch,
    logits 0.62; with the masked add left in float, both > 0.999)."""
    parameters = {name for name, _ in module.named_parameters()}
    data: set[torch.fx.Node] = set()
    masks: set[torch.fx.Node] = set()
    for node in module.graph.nodes:
        value, inputs = node.meta.get("val"), node.all_input_nodes
        if (node.op == "placeholder" and isinstance(value, torch.Tensor) and value.dtype.is_floating_point) \
                or (node.op == "get_attr" and node.target in parameters) or any(n in data for n in inputs):
            data.add(node)
        elif any(n in masks for n in inputs) or any(isinstance(a, float) and abs(a) >= 1e4 for a in node.args):
            masks.add(node)
    return masks


def _quantize_filter(module: torch.fx.GraphModule, keep_float: tuple[str, ...]):
    """Quantize a node unless the profile keeps its module in float or it takes an attention mask."""
    masks = _attention_masks(module)
    kept = _keep_float_filter(keep_float)
    return lambda node: kept(node) and not any(n in masks for n in node.all_input_nodes)


def kept_float_modules(module: torch.fx.GraphModule, patterns: tuple[str, ...]) -> list[str]:
    """The module paths that the keep_float patterns left in float, for the manifest."""
    quantized = _keep_float_filter(patterns)
    return sorted({_module_paths(n)[-1] for n in module.graph.nodes
                   if n.op == "call_function" and _module_paths(n) and not quantized(n)})


def _integer_scalars_kept(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """XNNPACKQuantizer turns every scalar operand of an add or mul into a float32 constant, of integer arithmetic
    too (executorch 1.5.1, ``_convert_scalars_to_attrs``): transformers' attention masks index with
    ``arange(length) + 0``, which then gives float indices and an IndexError in calibration. Such a constant gets
    its node's integer dtype back."""
    for node in model.graph.nodes:
        value = node.meta.get("val")
        if node.op != "call_function" or not isinstance(value, torch.Tensor) or value.dtype.is_floating_point:
            continue
        for arg in node.args:
            if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" and arg.target.startswith("_tensor_constant_"):
                constant = getattr(model, arg.target)
                if constant.dtype != value.dtype:
                    setattr(model, arg.target, constant.to(value.dtype))
                    arg.meta["val"] = value.fake_mode.from_tensor(getattr(model, arg.target), static_shapes=True)
    return model


_CLAMPS = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
_CLAMPED = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
_ANNOTATION = "quantization_annotation"


def _clamps_fused(model: torch.fx.GraphModule) -> None:
    """Move the output quantization of a conv or linear onto the ReLU6 (hardtanh) right after it, as the
    quantizer's own conv+relu pattern does for relu. XNNPACKQuantizer (executorch 1.5.1) fuses only relu: a
    hardtanh then shares the conv's pre-clamp scale, which on EfficientNet-Lite0's stem spans [-53, 61] and leaves
    about 8 levels over [0, 6]. Measured on the .pte at batch 1, nearest rounding: EfficientNet-Lite0 logits
    2.9 -> 14.6 dB SQNR, MobileNetV2 8.7 -> 11.4 dB; with the profile's GPTQ, EfficientNet-Lite0 3.6 -> 21.8 dB
    (docs/results/int8-peers.md). XNNPACK fuses the conv and the clamp into one delegated op either way."""
    for node in model.graph.nodes:
        producer = node.args[0] if node.op == "call_function" and node.target in _CLAMPS else None
        if not isinstance(producer, torch.fx.Node) or producer.target not in _CLAMPED or len(producer.users) != 1:
            continue
        annotation = producer.meta.get(_ANNOTATION)
        if annotation is None or annotation.output_qspec is None:
            continue
        node.meta[_ANNOTATION] = QuantizationAnnotation(input_qspec_map={}, output_qspec=annotation.output_qspec,
                                                        _annotated=True)
        annotation.output_qspec = None


class _Quantizer(XNNPACKQuantizer):
    def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        return _integer_scalars_kept(super().transform_for_annotation(model))

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        model = self._annotate_for_quantization_config(model)
        _clamps_fused(model)  # before propagation, which would give the clamp its input's scale
        propagate_annotation(model)
        return model


def _calibrate(prepared: torch.fx.GraphModule, calib: CalibrationData, input_names: tuple[str, ...]) -> None:
    with torch.no_grad():
        for batch in calib.batches(CALIBRATION_BATCH):
            prepared(*(torch.from_numpy(batch[name]) for name in input_names))


def quantize(spec: ModelSpec, recipe: QuantRecipe, calib: CalibrationData) -> tuple[torch.fx.GraphModule, dict]:
    """The calibrated, converted module and what reached the quantizer (for the manifest)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=batch_dynamic_shapes(spec))
        graph = program.module()
        quantizer = _Quantizer().set_global(_config(recipe))
        quantizer.set_filter_function(_quantize_filter(graph, recipe.keep_float))
        kept = kept_float_modules(graph, recipe.keep_float) if recipe.keep_float else []
        prepared = prepare_pt2e(graph, quantizer)
        _calibrate(prepared, calib, spec.input_names)
        converted = convert_pt2e(prepared)
    applied = {"quantizer": "XNNPACKQuantizer (PT2E, torchao prepare_pt2e / convert_pt2e)", "method": "minmax",
               "per_channel": recipe.per_channel, "weights": "int8 symmetric", "activations": "int8 (calibrated)",
               "kept_float_modules": kept}
    return converted, applied
