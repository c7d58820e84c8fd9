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


class AttentionCNN(nn.Module):
    """The same trunk with a spatial attention head.

    A 1x1 conv scores each of the 16 positions of the last feature map; the softmax over them is the
    attention distribution, which gates the features before the classifier. Returns (logits, attention)
    with attention [B, 16] (a 4x4 map over the image, rows sum to 1), so a report can show where it looks.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.score = nn.Conv2d(20, 1, kernel_size=1)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(image)
        attention = torch.softmax(self.score(features).flatten(1), dim=1)
        positions = attention.shape[1]
        gated = features * (attention * positions).unsqueeze(1).reshape(-1, 1, 4, 4)
        logits = self.fc2(F.relu(self.fc1(gated.flatten(1))))
        return logits, attention
