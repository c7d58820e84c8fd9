"""SimpleCNN and AttentionCNN: the digit classifiers of our source documents (input 1x28x28)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Trunk(nn.Module):
    """conv(1->10,k5) relu maxpool, conv(10->20,k5) relu maxpool: [B,1,28,28] -> [B,20,4,4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return F.max_pool2d(F.relu(self.conv2(x)), 2)


class SimpleCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.trunk(image).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class SpatialAttention(nn.Module):
    """Scores each position of a feature map with a 1x1 convolution; the softmax over the positions is the attention,
    which rescales every channel at that position (mean scale 1). Returns (gated features, attention [B, positions]).

    A module of its own so that structured pruning can be told the gate keeps the channels it is given
    (edgekit.compress.pruners)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        conv = nn.Conv2d(channels, 1, kernel_size=1)  # for its initialization; the parameters live here
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attention = torch.softmax(F.conv2d(features, self.weight, self.bias).flatten(1), dim=1)
        positions = attention.shape[1]
        gated = features * (attention * positions).unsqueeze(1).reshape(-1, 1, *features.shape[2:])
        return gated, attention


class AttentionCNN(nn.Module):
    """The same trunk with a spatial attention head.

    The attention over the 16 positions of the last feature map gates the features before the classifier.
    Returns (logits, attention) with attention [B, 16] (a 4x4 map over the image, rows sum to 1), so a report can
    show where it looks.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.score = SpatialAttention(20)  # named score: the trained weights are score.weight and score.bias
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gated, attention = self.score(self.trunk(image))
        logits = self.fc2(F.relu(self.fc1(gated.flatten(1))))
        return logits, attention
