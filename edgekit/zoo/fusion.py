"""FusionNet: multimodal text+image fusion with a cross-modal attention block.

Task (sample_data/captions/TASK.md): the target is (digit in the image + number named by the caption) mod 10,
so neither modality alone can do better than chance.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgekit.data.captions import PAD, SEQ_LEN
from edgekit.zoo.transformer import MultiHeadAttention, TransformerEncoderLayer


class FusionHead(nn.Sequential):
    """The classifier over the pooled modalities: concatenates its ``inputs`` inputs (each [B, D]) and runs its layers.

    The concatenation lives in here so that structured pruning can be told which block of the first layer's
    columns belongs to which input (edgekit.compress.pruners)."""

    def __init__(self, inputs: int, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.inputs = inputs

    def forward(self, *pooled: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat(pooled, 1))


class FusionNet(nn.Module):
    """Image branch (CNN over the digit), text branch (token embedding + one encoder layer over the caption).

    Fusion: the caption tokens attend over the 16 image positions (cross-modal attention, weights
    returned as [B, heads, SEQ_LEN, 16]); the pooled image, pooled text and pooled cross-attended
    features are concatenated into the classifier. ``use_image`` / ``use_text`` make the ablations.
    """

    def __init__(self, vocab_size: int = 64, d_model: int = 64, num_heads: int = 4, num_classes: int = 10,
                 use_image: bool = True, use_text: bool = True) -> None:
        super().__init__()
        self.use_image, self.use_text = use_image, use_text
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, d_model, kernel_size=5)
        self.image_pos = nn.Parameter(torch.randn(1, 16, d_model) * 0.02)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.text_pos = nn.Parameter(torch.randn(1, SEQ_LEN, d_model) * 0.02)
        self.text_encoder = TransformerEncoderLayer(d_model, num_heads, 2 * d_model, dropout=0.1)
        self.cross = MultiHeadAttention(d_model, num_heads)
        self.cross_norm = nn.LayerNorm(d_model)
        self.head = FusionHead(3, nn.Linear(3 * d_model, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, num_classes))

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.use_image:
            image = torch.zeros_like(image)
        if not self.use_text:
            tokens = torch.zeros_like(tokens)
        x = F.max_pool2d(F.relu(self.conv1(image)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        image_seq = x.flatten(2).transpose(1, 2) + self.image_pos  # [B, 16, D]
        text_seq, _ = self.text_encoder(self.embed(tokens) + self.text_pos)  # [B, T, D]
        mask = (tokens != PAD).to(text_seq.dtype).unsqueeze(-1)
        count = mask.sum(1).clamp(min=1.0)
        crossed, weights = self.cross(self.cross_norm(text_seq), image_seq, image_seq)  # weights [B, H, T, 16]
        return self.head(image_seq.mean(1), (text_seq * mask).sum(1) / count, (crossed * mask).sum(1) / count), weights
