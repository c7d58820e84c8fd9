"""A Transformer encoder from our own parts, returning attention weights per layer and head."""
from __future__ import annotations

import math

import torch
from torch import nn


class AttentionHeads(nn.Module):
    """softmax(q k^T / sqrt(head_dim)) v over ``num_heads`` heads: the parameter-free middle of multi-head attention.

    q, k, v and the output are [B, T, num_heads * head_dim] with the heads laid one after another. It is a module of
    its own so that structured pruning can be told these channels come in ``num_heads`` equal groups
    (edgekit.compress.pruners)."""

    def __init__(self, num_heads: int, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        # fixed at construction: a pruned head keeps the softmax temperature its weights were trained with
        self.temperature = math.sqrt(head_dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._split(q), self._split(k), self._split(v)
        weights = torch.softmax(q @ k.transpose(-2, -1) / self.temperature, dim=-1)
        out = (self.dropout(weights) @ v).transpose(1, 2)
        return out.reshape(out.shape[0], out.shape[1], -1), weights


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over ``num_heads`` heads; returns (output, weights [B, H, Tq, Tk])."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.heads = AttentionHeads(num_heads, d_model // num_heads, dropout)
        self.out_proj = nn.Linear(d_model, d_model)

    @property
    def num_heads(self) -> int:
        return self.heads.num_heads

    @property
    def head_dim(self) -> int:
        return self.heads.head_dim

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, weights = self.heads(self.q_proj(query), self.k_proj(key), self.v_proj(value))
        return self.out_proj(out), weights


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer: self-attention and a feed-forward block, each with a residual and dropout."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(x)
        attended, weights = self.attn(h, h, h)
        x = x + self.dropout(attended)
        return x + self.dropout(self.ff(self.norm2(x))), weights


class TransformerEncoder(nn.Module):
    """N encoder layers and an optional final norm; returns (x, weights [B, N, H, T, T])."""

    def __init__(self, layer_factory, num_layers: int, final_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layer_factory() for _ in range(num_layers))
        self.norm = final_norm if final_norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x)
            all_weights.append(weights)
        return self.norm(x), torch.stack(all_weights, dim=1)


class TransformerClassifier(nn.Module):
    """Classifies a 1x28x28 digit as a sequence of 16 patches of 7x7 plus a class token."""

    def __init__(self, d_model: int = 64, num_heads: int = 4, num_layers: int = 2, d_ff: int = 128,
                 patch: int = 7, num_classes: int = 10, dropout: float = 0.1) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch * patch, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, (28 // patch) ** 2 + 1, d_model) * 0.02)
        self.encoder = TransformerEncoder(lambda: TransformerEncoderLayer(d_model, num_heads, d_ff, dropout),
                                          num_layers, nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, p = image.shape[0], self.patch
        patches = image.reshape(b, 28 // p, p, 28 // p, p).permute(0, 1, 3, 2, 4).reshape(b, -1, p * p)
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(patches)], dim=1) + self.pos
        x, attentions = self.encoder(x)
        return self.head(x[:, 0]), attentions
