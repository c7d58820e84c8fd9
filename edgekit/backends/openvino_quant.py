"""NNCF post-training quantization for the openvino backend: int8 static (calibrated) and int8 weights with
the CPU plugin's dynamic activation quantization (int8-dynamic)."""
from __future__ import annotations

import logging
import re
import warnings

import openvino as ov

from edgekit.config import QuantRecipe
from edgekit.data.calib import CalibrationData
from edgekit.errors import EdgekitError

logging.getLogger("nncf").setLevel(logging.ERROR)
# NNCF forks workers; litert-torch has imported jax in this process, which then warns about fork on every call
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

_CONSTANT_SOURCES = {"Constant", "Convert", "FakeQuantize", "Multiply", "Subtract", "Reshape"}


def _is_constant(node) -> bool:
    """True when a value is computed from constants only (a weight, possibly decompressed)."""
    seen, stack = set(), [node]
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in seen:
            continue
        seen.add(op.get_friendly_name())
        if op.get_type_name() == "Parameter":
            return False
        if op.get_type_name() != "Constant":
            stack.extend(i.get_source_output().get_node() for i in op.inputs())
    return True


def attention_ops(model: ov.Model) -> list[str]:
    """Attention's products of two activations (Q @ K^T, weights @ V): MatMuls with no constant input, and the
    fused ScaledDotProductAttention op that torch's SDPA converts to. A model with any is quantized with NNCF's
    TRANSFORMER model type."""
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() == "ScaledDotProductAttention" or op.get_type_name() == "MatMul" and
            not any(_is_constant(i.get_source_output().get_node()) for i in op.inputs())]


def embedding_lookups(model: ov.Model) -> list[str]:
    """Gathers from a constant table. An attention model keeps them and its attention ops in float, as on the onnx
    and tflite backends: NNCF's all-int8 transformer mode gave MiniLM's intent logits a cosine of 0.75, the word
    embedding its first diverging layer."""
    return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Gather"
            and op.inputs() and _is_constant(op.input(0).get_source_output().get_node())]


def _range_estimator(method: str):
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    sets = {"minmax": RangeEstimatorParametersSet.MINMAX, "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE}
    if method not in sets:
        raise EdgekitError(f"NNCF has no {method!r} calibration; use minmax or percentile for OpenVINO")
    return sets[method]


def kept_float_ops(module_paths: dict[str, str | None], patterns: tuple[str, ...]) -> list[str]:
    """The ops whose torch module path (or, failing that, friendly name) matches a keep_float pattern."""
    return sorted(name for name, path in module_paths.items()
                  if any(re.search(p, path or "") or re.search(p, name) for p in patterns))


def quantize(model: ov.Model, precision: str, recipe: QuantRecipe, calib: CalibrationData | None,
             module_paths: dict[str, str | None]) -> tuple[ov.Model, dict]:
    """The quantized model and what reached NNCF, for the manifest. ``module_paths``: op friendly name -> the
    torch module it came from, which keep_float patterns are matched against."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )

    def ignoring(names: list[str]):
        return nncf.IgnoredScope(names=sorted(set(names)), validate=False) if names else None

    keep = kept_float_ops(module_paths, recipe.keep_float)
    if precision == "int8-dynamic":
        compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM,
                                           ignored_scope=ignoring(keep))
        return compressed, {"weights": "int8_asym per channel (compress_weights)", "per_channel": True,
                            "kept_float_ops": len(keep),
                            "activations": "dynamic (CPU plugin, group size 32)"}
    attention = attention_ops(model)
    transformer = bool(attention)
    ignored = ignoring(keep + attention + embedding_lookups(model) if transformer else keep)
    estimator = _range_estimator(recipe.method)
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=estimator,
        weights_quantization_params=QuantizationParameters(per_channel=recipe.per_channel))
    quantized = nncf.quantize(model, nncf.Dataset(list(calib.batches(1))), subset_size=len(calib),
                              model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                              ignored_scope=ignored, advanced_parameters=advanced)
    return quantized, {"model_type": "transformer, weight ops only" if transformer else "default",
                       "method": recipe.method,
                       "per_channel": recipe.per_channel, "weights": "int8", "activations": "int8 (calibrated)",
                       "kept_float_ops": len(keep)}
