"""Weight rounding alone, in torch: the logits of a model whose Conv2d / Linear weights are rounded onto the int8
grid (nearest, and GPTQ on the calibration data) against the float model's, on the validation data. Activations
stay float, so this is the weights' share of the int8 error. Prints the numbers behind "Why GPTQ" in
docs/results/int8/efficientnet.md (it does not write the page).

    python benchmarks/gptq_effect.py --source examples/efficientnet_lite0.py:build \\
        --calib examples/efficientnet_lite0.py:calibration --data examples/efficientnet_lite0.py:validation
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from edgekit.data.calib import load_calibration
from edgekit.data.sources import Dataset, InputInfo, load_data
from edgekit.quantize.gptq import gptq, nearest
from edgekit.source import load_source
from edgekit.spec import ModelSpec


def logits(module: torch.nn.Module, data, names) -> np.ndarray:
    with torch.no_grad():
        out = [module(*(torch.from_numpy(b[n]) for n in names)) for b in data.batches(16)]
    return np.concatenate([(o[0] if isinstance(o, (tuple, list)) else o).numpy() for o in out])


def model_and_data(description: str) -> tuple[argparse.Namespace, ModelSpec, Dataset, Dataset]:
    """--source, --calib and --data from the command line, loaded: the arguments, the model, calibration (200
    samples at most) and validation data (int8_headroom.py shares these)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", required=True)
    parser.add_argument("--calib", required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    spec = load_source(args.source)
    info = InputInfo.of(spec)
    return args, spec, load_calibration(args.calib, info, 200), load_data(args.data, info, "--data", 100_000)


def main() -> None:
    _, spec, calib, data = model_and_data(__doc__.splitlines()[0])
    start = time.perf_counter()
    rounded, record = gptq(spec, calib)
    seconds = time.perf_counter() - start
    names = spec.input_names
    ref = logits(spec.module, data, names)
    for label, module in (("nearest", nearest(spec.module)), ("gptq", rounded.module)):
        out = logits(module, data, names)
        cosine = float((ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out))
        sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - out) ** 2).sum())
        agree = float((ref.argmax(-1) == out.argmax(-1)).mean())
        print(f"{label:8s} weights only: logits cosine {cosine:.5f} ({sqnr:.1f} dB), top-1 agreement {agree:.3f} "
              f"on {len(ref)} samples")
    print(f"GPTQ: {record.layers and len(record.layers)} layers in {seconds:.0f} s on {len(calib)} calibration "
          f"samples; skipped: {record.skipped or 'none'}")


if __name__ == "__main__":
    main()
