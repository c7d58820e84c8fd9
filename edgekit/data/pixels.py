"""An image becomes a model input: resized (stretched, or shorter side then centre crop), converted, scaled,
normalized per channel, channels first.

Numpy and pillow only, no edgekit imports: bundles carry this file as ``edgekit_pixels.py``, so the device and
the host preprocess a photo the same way."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def image_to_input(image, size: Sequence[int], grayscale: bool, scale: float, mean: Sequence[float],
                   std: Sequence[float], center_crop: float | None = None,
                   interpolation: str = "bilinear") -> np.ndarray:
    """A pillow image as a float32 [C, H, W] array: ``(pixel * scale - mean) / std``; ``size`` is (height, width)."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    image = image.convert("L" if grayscale else "RGB")
    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    if center_crop is None:
        image = image.resize((width, height), resample)
    else:  # the shorter side to size / center_crop, then the centre
        ratio = max(height, width) / center_crop / min(image.size)
        image = image.resize((max(width, round(image.size[0] * ratio)), max(height, round(image.size[1] * ratio))),
                             resample)
        left, top = (image.size[0] - width) // 2, (image.size[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32) * np.float32(scale)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    mean_ = np.array(mean, np.float32).reshape(-1, 1, 1)
    std_ = np.array(std, np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((pixels - mean_) / std_, dtype=np.float32)
