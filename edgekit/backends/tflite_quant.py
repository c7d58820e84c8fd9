"""ai-edge-quantizer on the fp32 .tflite, for the tflite backend: full-integer static int8 (float I/O,
QUANTIZE/DEQUANTIZE inside) calibrated on every signature, and dynamic-range int8."""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.config import QuantRecipe
from edgekit.data.calib import CalibrationData

os.environ.setdefault("TQDM_DISABLE", "1")

# Ops that carry weights. Transformers quantize only these: measured here, full int8 of the attention
# logits (BATCH_MATMUL) and layer norms cost the TransformerClassifier 0.6 to 2.5 accuracy points.
WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
FLOAT_IO = [{"regex": ".*", "operation": "INPUT", "algorithm_key": "no_quantize"},
            {"regex": ".*", "operation": "OUTPUT", "algorithm_key": "no_quantize"}]


def op_names(path: Path) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def kept_float_scopes(path: Path, patterns: tuple[str, ...], module_of: Callable[[str], str | None]) -> list[str]:
    """The op scopes (ai-edge-quantizer's names: the op's output tensor names) whose torch module path, read from
    those tensor names, or the scope itself matches a keep_float pattern."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    if not patterns:
        return []
    model = fb.read_model(str(path))
    scopes = set()
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            scope = fb.get_op_scope(op, subgraph.tensors)
            modules = [module_of(name) or "" for name in scope.split(";") if name]
            if any(re.search(p, m) for p in patterns for m in modules) or any(re.search(p, scope) for p in patterns):
                scopes.add(scope)
    return sorted(scopes)


def _static_recipe(recipe: QuantRecipe, weight_ops_only: bool) -> list[dict]:
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    granularity = qtyping.QuantGranularity.CHANNELWISE if recipe.per_channel else qtyping.QuantGranularity.TENSORWISE
    ops = WEIGHT_OPS if weight_ops_only else ("ALL_SUPPORTED",)
    for op in ops:
        manager.add_static_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                  activation_num_bits=8, weight_num_bits=8, weight_granularity=granularity)
    return manager.get_quantization_recipe()


def calibration_batches(path: Path, calib: CalibrationData, input_names: tuple[str, ...],
                         layout: str) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every signature needs its own calibration batches of its own batch size."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    batches = {}
    for signature in interpreter.get_signature_list():
        details = interpreter.get_signature_runner(signature).get_input_details()
        size = int(details["args_0"]["shape"][0])
        rows = []
        for start in range(0, len(calib) - size + 1, size):
            feed = {}
            for i, name in enumerate(input_names):
                value = calib.inputs[name][start:start + size]
                if layout == "NHWC" and value.ndim == 4:
                    value = value.transpose(0, 2, 3, 1)
                # a signature for a shorter length (dynamic axes) takes the first tokens of each sample
                shape = details[f"args_{i}"]["shape"]
                value = value[(slice(None), *(slice(0, int(d)) for d in shape[1:]))]
                feed[f"args_{i}"] = np.ascontiguousarray(value, dtype=details[f"args_{i}"]["dtype"])
            rows.append(feed)
        batches[signature] = rows
    return batches


def quantize(fp32: Path, out: Path, precision: str, recipe: QuantRecipe, calib: CalibrationData | None,
             input_names: tuple[str, ...], layout: str, module_of: Callable[[str], str | None]) -> dict:
    """``module_of``: the torch module path a tensor name holds, which keep_float patterns are matched against."""
    from ai_edge_quantizer import calibrator, quantizer
    from ai_edge_quantizer import recipe as recipes
    from ai_edge_quantizer.utils import qsv_utils

    scopes = kept_float_scopes(fp32, recipe.keep_float, module_of)
    # the narrowest (last-added) matching scope wins in ai-edge-quantizer: these come after the global ones
    keep = [{"regex": f"^{re.escape(scope)}$", "operation": "*", "algorithm_key": "no_quantize"}
            for scope in scopes]
    if precision == "int8-dynamic":
        q = quantizer.Quantizer(str(fp32), recipes.dynamic_wi8_afp32() + keep)
        q.quantize(None).export_model(str(out), overwrite=True)
        os.chmod(out, 0o644)
        return {"recipe": "dynamic_wi8_afp32", "weights": "int8 per channel", "per_channel": True,
                "kept_float_ops": len(scopes),
                "activations": "dynamic (quantized per call)"}
    weight_ops_only = "BATCH_MATMUL" in op_names(fp32)
    q = quantizer.Quantizer(str(fp32), _static_recipe(recipe, weight_ops_only) + FLOAT_IO + keep)
    # global min/max over all batches: the default moving average gives b1 and b8 different ranges
    cal = calibrator.Calibrator(q._float_model_buffer, qsv_update_func=qsv_utils.min_max_update)
    cal.calibrate(calibration_batches(fp32, calib, input_names, layout), q._recipe_manager)
    q.quantize(cal.get_model_qsvs()).export_model(str(out), overwrite=True)
    os.chmod(out, 0o644)  # export_model marks the file executable
    return {"recipe": "static_wi8_ai8 on weight ops only (attention model)" if weight_ops_only
            else "static_wi8_ai8", "io": "float32", "method": "minmax", "per_channel": recipe.per_channel,
            "weights": "int8", "activations": "int8 (calibrated)", "kept_float_ops": len(scopes)}
