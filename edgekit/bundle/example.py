"""Minimal integration of this bundle's model into an app: load it with its runtime, preprocess an image with the
manifest's values, run, postprocess (softmax, label). Copy what you need; run.py is the full tool.

    python example.py IMAGE.png        (needs pillow for the image; numpy and the model's runtime)"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
pre, runtime = manifest["preprocess"], manifest["runtime"]
model_path = str(HERE / manifest["model_file"])
input_name = manifest["inputs"][0]["name"]

# 1. preprocess: resize, scale, normalize per channel, NCHW batch of one (then the model's layout)
image = Image.open(sys.argv[1]).convert(pre["channel_order"]).resize((pre["size"][1], pre["size"][0]))
x = np.asarray(image, dtype=np.float32) * pre["scale"]
x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
x = (x - np.array(pre["mean"], np.float32)[:, None, None]) / np.array(pre["std"], np.float32)[:, None, None]
x = x[None]
if manifest["layout"] == "NHWC":
    x = x.transpose(0, 2, 3, 1)
x = np.ascontiguousarray(x, dtype=manifest["inputs"][0]["dtype"])

# 2. run, with this bundle's runtime
if manifest["backend"] == "onnx":
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    scores = session.run(None, {input_name: x})[0][0]
elif manifest["backend"] == "openvino":
    import openvino as ov

    compiled = ov.Core().compile_model(model_path, runtime["device"], runtime.get("compile_config", {}))
    scores = compiled({input_name: x})[compiled.outputs[0]][0]
else:  # tflite: one signature per batch size; batch 1 is "b1"
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=model_path).get_signature_runner("b1")
    result = runner(**{runtime["signature_inputs"][input_name]: x})
    scores = result[runtime["signature_outputs"][manifest["outputs"][0]["name"]]][0]

# 3. postprocess: probabilities and the label
probs = np.exp(scores - scores.max())
probs /= probs.sum()
labels = manifest["labels"] or [str(i) for i in range(len(probs))]
best = int(probs.argmax())
print(f"{labels[best]} ({probs[best]:.1%})")
