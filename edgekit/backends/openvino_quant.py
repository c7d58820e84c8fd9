"""NNCF post-training quantization for the openvino backend: int8 static (calibrated) and int8 weights with
the CPU plugin's dynamic activation quantization (int8-dynamic)."""
from __future__ import annotations

import logging
import re
import warnings

import openvino as ov

from edgekit.backends.common import keeps_gates
from edgekit.backends.openvino_session import (
    DEFAULT_GROUP_SIZE,
    core,
    exact_int8_products,
)
from edgekit.config import Gates, QuantRecipe
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


PER_CHANNEL_MARGIN_DB = 1.0


def _per_channel_activations(model: ov.Model) -> int:
    """How many activation FakeQuantizes NNCF gave one range per channel (it does at depthwise convolutions'
    inputs)."""
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
               and not _is_constant(op.input(0).get_source_output().get_node())
               and op.input(1).get_source_output().get_node().get_data().size > 1)


def _sqnr_db(reference: list[list], got: list[list]) -> float:
    import numpy as np

    want = np.concatenate([np.ravel(o) for outs in reference for o in outs]).astype(np.float64)
    have = np.concatenate([np.ravel(o) for outs in got for o in outs]).astype(np.float64)
    return float(10 * np.log10(max(np.sum(want ** 2), 1e-30) / max(np.sum((have - want) ** 2), 1e-30)))


def _outputs(model: ov.Model, samples: list[dict], config: dict[str, str] | None = None) -> list[list]:
    # float layers in f32, as every edgekit session runs an int8 model (the CPU plugin would pick bf16 here)
    compiled = core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", **(config or {})})
    return [[value for value in compiled(sample).values()] for sample in samples]


def kept_float_ops(module_paths: dict[str, str | None], patterns: tuple[str, ...]) -> list[str]:
    """The ops whose torch module path (or, failing that, friendly name) matches a keep_float pattern."""
    return sorted(name for name, path in module_paths.items()
                  if any(re.search(p, path or "") or re.search(p, name) for p in patterns))


def _ignoring(names: list[str]):
    """NNCF's scope of ops to leave in float (None: none)."""
    import nncf

    return nncf.IgnoredScope(names=sorted(set(names)), validate=False) if names else None


def quantize(model: ov.Model, precision: str, recipe: QuantRecipe, calib: CalibrationData | None,
             module_paths: dict[str, str | None], gates: Gates | None = None) -> tuple[ov.Model, dict]:
    """The quantized model and what reached NNCF, for the manifest. ``module_paths``: op friendly name -> the
    torch module it came from, which keep_float patterns are matched against; ``gates``: the profile's, which an
    int8-dynamic model's activation group size must keep on the calibration samples."""
    keep = kept_float_ops(module_paths, recipe.keep_float)
    if precision == "int8-dynamic":
        return _int8_weights(model, recipe, calib, keep, gates or Gates())
    return _int8_static(model, recipe, calib, keep)


def _int8_weights(model: ov.Model, recipe: QuantRecipe, calib: CalibrationData | None, keep: list[str],
                  gates: Gates) -> tuple[ov.Model, dict]:
    """int8-dynamic: int8 weights, and the activation group size the CPU plugin quantizes activations by."""
    import nncf

    samples = list(calib.batches(1))[:recipe.search_samples] if calib else []
    reference = _outputs(model, samples) if samples and not recipe.dynamic_group_size else []
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=_ignoring(keep))
    groups = dynamic_group(compressed, recipe.dynamic_group_size, samples, reference, gates)
    return compressed, {"weights": "int8_asym per channel (compress_weights)", "per_channel": True,
                        "kept_float_ops": len(keep), "dynamic_groups": groups, "calibrated": "tried" in groups,
                        "activations": f"dynamic (CPU plugin, group size {groups['group_size']})"}


def _int8_static(model: ov.Model, recipe: QuantRecipe, calib: CalibrationData | None,
                 keep: list[str]) -> tuple[ov.Model, dict]:
    """int8 static: weights and activations, activation ranges calibrated on ``calib``."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    attention = attention_ops(model)
    transformer = bool(attention)
    ignored = _ignoring(keep + attention + embedding_lookups(model) if transformer else keep)
    estimator = _range_estimator(recipe.method)
    # NNCF's overflow fix rounds the first layer's weights again to 7 bits (GPTQ's rounding is lost there) so that
    # x86 CPUs without VNNI do not saturate; where this CPU's int8 products are exact the IR keeps 8 bits, and the
    # manifest says so (a session on a CPU without VNNI then warns). EfficientNet-Lite0 logits cosine, per-tensor
    # activation ranges, AVX-512 VNNI: 0.99156 with the fix, 0.99670 without.
    exact, why = exact_int8_products()
    overflow_fix = OverflowFix.DISABLE if exact else OverflowFix.FIRST_LAYER

    def quantized_on(samples: list[dict], per_channel_activations: bool) -> ov.Model:
        advanced = AdvancedQuantizationParameters(
            overflow_fix=overflow_fix,
            activations_range_estimator_params=estimator,
            weights_quantization_params=QuantizationParameters(per_channel=recipe.per_channel),
            activations_quantization_params=None if per_channel_activations else QuantizationParameters(
                per_channel=False))
        return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                             model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                             ignored_scope=ignored, advanced_parameters=advanced)

    samples = list(calib.batches(1))
    quantized = quantized_on(samples, recipe.activation_ranges != "per_tensor")
    ranges = {"asked": recipe.activation_ranges, "per_channel_quantizers": _per_channel_activations(quantized)}
    if recipe.activation_ranges == "auto" and ranges["per_channel_quantizers"]:
        ranges.update(_held_out_choice(model, samples, quantized_on))
        if ranges["chosen"] == "per_tensor":
            quantized = quantized_on(samples, False)
    else:
        ranges["chosen"] = "per_channel where NNCF puts them" if ranges["per_channel_quantizers"] else "per_tensor"
    return quantized, {"model_type": "transformer, weight ops only" if transformer else "default",
                       "method": recipe.method,
                       "per_channel": recipe.per_channel, "weights": "int8", "activations": "int8 (calibrated)",
                       "activation_ranges": ranges, "kept_float_ops": len(keep),
                       "overflow_fix": {"applied": overflow_fix.value, "why": why,
                                        "needs_exact_int8_products": exact}}


def _held_out_choice(model: ov.Model, samples: list[dict], quantized_on) -> dict:
    """Per-channel or per-tensor activation ranges, whichever gives the smaller error on calibration samples that
    set no range. NNCF gives a depthwise convolution's input one range per channel; a channel that stays small on
    the calibration data clips on other data. EfficientNet-Lite0 (160 calibration crops, 67 validation photos):
    on the validation photos 150 of one layer's 1152 channels went past 1.5x their range, up to 14x, and logits
    cosine was 0.98343 per channel against 0.99156 per tensor (both with the overflow fix); MobileNetV2 went the
    other way (0.98833 against 0.98124). Which way a model goes is measured here, on calibration samples neither
    quantization saw. They come from the same photos as the rest, which hides most of the clipping new photos
    bring: with NNCF's overflow fix EfficientNet's held-out crops gave per channel 16.0 dB against 15.4 (a win
    that turned into a 2.9 dB loss on the validation photos; without the fix per tensor wins there too, 20.1
    against 19.2), MobileNetV2's 14.5 against 10.3. Per channel must therefore win by PER_CHANNEL_MARGIN_DB, a
    margin set from these two models."""
    held = max(4, len(samples) // 4)
    if len(samples) - held < 4:
        return {"chosen": "per_channel where NNCF puts them", "why": f"{len(samples)} calibration samples are too "
                f"few to hold some out"}
    fit, check = samples[:-held], samples[-held:]
    reference = _outputs(model, check)
    sqnr = {name: round(_sqnr_db(reference, _outputs(quantized_on(fit, per_channel), check)), 2)
            for name, per_channel in (("per_channel", True), ("per_tensor", False))}
    chosen = "per_channel where NNCF puts them" if sqnr["per_channel"] >= sqnr["per_tensor"] + PER_CHANNEL_MARGIN_DB \
        else "per_tensor"
    return {"chosen": chosen, "held_out_samples": held, "held_out_sqnr_db": sqnr,
            "rule": f"per channel only if it wins by >= {PER_CHANNEL_MARGIN_DB} dB"}


# The CPU plugin's dynamic activation quantization: one scale per GROUP_SIZES values of a row. MiniLM intent
# (int8 weights, one thread, AVX-512 VNNI + AMX Xeon, fp32 6.76 ms): 32 values 2.81 ms, logits cosine 0.99974;
# 64: 2.37 ms, 0.99965; 128: 2.17 ms, 0.99950; 256, which does not divide its 384-wide rows: 2.89 ms, 0.99915.
GROUP_SIZES = (128, 64, 32)


def _row_widths(model: ov.Model) -> set[int]:
    """The input widths (reduced dimension) of the MatMuls by a constant weight: the ones the plugin quantizes."""
    widths = set()
    for op in model.get_ops():
        if op.get_type_name() != "MatMul" or not _is_constant(op.input(1).get_source_output().get_node()):
            continue
        dim = op.input(0).get_partial_shape()[-2 if op.get_attributes().get("transpose_a") else -1]
        if dim.is_static:
            widths.add(dim.get_length())
    return widths


def _by_output(outputs: list[list], names: list[str]) -> dict:
    import numpy as np

    return {name: np.concatenate([outs[i] for outs in outputs]) for i, name in enumerate(names)}


def dynamic_group(model: ov.Model, asked: int, samples: list[dict], reference: list[list], gates: Gates) -> dict:
    """The activation group size the CPU plugin is to use, and why: ``asked`` when the profile sets one, else the
    largest of GROUP_SIZES that divides the input width of every layer the usual group size quantizes and keeps
    every output gate (warn) on the calibration samples, larger groups being faster."""
    if asked:
        return {"group_size": asked, "chosen": "set by the profile"}
    # a group must divide a row for the plugin to quantize it in groups: a larger group may not leave out a row
    # that the usual one quantizes
    widths = sorted(w for w in _row_widths(model) if w % DEFAULT_GROUP_SIZE == 0)
    fitting = [g for g in GROUP_SIZES if widths and all(w % g == 0 for w in widths)]
    if not fitting or not samples:
        why = "no calibration samples to judge larger groups on" if fitting else \
            f"no int8 layer's input width is a multiple of {DEFAULT_GROUP_SIZE}" if not widths else \
            f"no group of {GROUP_SIZES} divides every int8 layer's input width {widths}"
        return {"group_size": DEFAULT_GROUP_SIZE, "chosen": why}
    names = [port.get_any_name() for port in model.outputs]
    want = _by_output(reference, names)
    tried = {}
    for group in fitting:
        got = _by_output(_outputs(model, samples, {"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(group)}), names)
        ok, tried[str(group)] = keeps_gates(want, got, gates)
        if ok:
            return {"group_size": group, "chosen": "the largest that keeps the output gates", "samples": len(samples),
                    "tried": tried}
    return {"group_size": fitting[-1], "chosen": "none kept the output gates: the smallest, the most accurate",
            "samples": len(samples), "tried": tried}
