"""Calibration data for int8: any DATA of sources.py (an image folder, a .npz, a samples factory, ``task:calib``),
seeded, optionally augmented. Only a model with a built-in task (the zoo) has default calibration data (its
``task:calib`` split, chosen in edgekit.api); for any other model int8 without calibration data is an error."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit.config import Augment
from edgekit.data.sources import KINDS, Dataset, InputInfo, load_data
from edgekit.errors import EdgekitError

CalibrationData = Dataset  # what the backends' quantize steps take
HOW = (f"pass --calib DATA: {KINDS} (e.g. --calib photos/, --calib sentences.py:samples, or --calib task:calib "
       "for a zoo model)")


def augment(images: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    out = images.copy()
    if aug.flip:
        flip = rng.random(len(out)) < 0.5
        out[flip] = out[flip][..., ::-1]
    if aug.crop:
        for i in range(len(out)):
            dy, dx = rng.integers(-aug.crop, aug.crop + 1, size=2)
            out[i] = np.roll(out[i], (dy, dx), axis=(-2, -1))
    if aug.brightness:
        out *= (1 + rng.uniform(-aug.brightness, aug.brightness, size=(len(out), 1, 1, 1))).astype(np.float32)
    return out


def load_calibration(calib: str | Path | None, info: InputInfo, samples: int, seed: int = 0,
                     aug: Augment = Augment()) -> CalibrationData:
    if calib is None or str(calib) == "":
        raise EdgekitError(f"int8 needs calibration data: {HOW}")
    data = load_data(calib, info, "--calib", samples, seed)
    if aug != Augment():
        rng = np.random.default_rng(seed)
        data = replace(data, inputs={k: augment(v, aug, rng) if v.ndim == 4 and v.dtype.kind == "f" else v
                                     for k, v in data.inputs.items()})
    return data
