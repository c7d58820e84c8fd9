"""Minimal integration of this bundle's model into an app: open it with every runtime option the manifest records,
preprocess an image with the manifest's values, run, postprocess (softmax, label). Copy what you need; run.py is
the full tool. edgekit_session.py opens the model exactly as edgekit's validation did (precision, threads, ...).

    python example.py IMAGE.png        (needs pillow for the image; numpy and the model's runtime)"""
import json
import sys
from pathlib import Path

import numpy as np
from edgekit_pixels import image_to_input
from edgekit_session import open_session
from PIL import Image

HERE = Path(__file__).resolve().parent
manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
pre = manifest["preprocess"]
input_spec, output_name = manifest["inputs"][0], manifest["outputs"][0]["name"]

# 1. preprocess: resize, scale, normalize per channel, a batch of one in the model's layout and dtype
with Image.open(sys.argv[1]) as image:
    x = image_to_input(image, pre["size"], pre["grayscale"], pre["scale"], pre["mean"], pre["std"],
                       pre["center_crop"], pre.get("interpolation", "bilinear"))[None]
if manifest["layout"] == "NHWC":
    x = x.transpose(0, 2, 3, 1)
x = np.ascontiguousarray(x, dtype=input_spec["dtype"])

# 2. run, with the runtime options of the manifest
session = open_session(HERE / manifest["model_file"], manifest["runtime"])
scores = session.run({input_spec["name"]: x})[output_name][0]

# 3. postprocess: probabilities and the label
probs = np.exp(scores - scores.max())
probs /= probs.sum()
labels = manifest["labels"] or [str(i) for i in range(len(probs))]
best = int(probs.argmax())
print(f"{labels[best]} ({probs[best]:.1%})")
applied = session.effective()
print(f"ran in {applied['precision']} with {applied['threads']} threads", file=sys.stderr)
