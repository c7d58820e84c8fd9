"""Unstructured L1 pruning with torch.nn.utils.prune, made permanent before export.

Dense runtimes do not get faster from zeros: unstructured sparsity shrinks a compressed file, not latency.
Structured channel pruning (channels.py) is what makes a model smaller and faster."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from edgekit.errors import EdgekitError

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    kind: str
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


@dataclass(frozen=True)
class SparsityReport:
    layers: tuple[LayerSparsity, ...]

    @property
    def overall(self) -> float:
        total = sum(layer.weights for layer in self.layers)
        return sum(layer.zeros for layer in self.layers) / total if total else 0.0


def prunable_layers(model: nn.Module, layer_types: tuple[type, ...] = PRUNABLE) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, layer_types)]


def sparsity_report(model: nn.Module, layer_types: tuple[type, ...] = PRUNABLE) -> SparsityReport:
    return SparsityReport(tuple(
        LayerSparsity(name, type(m).__name__, m.weight.numel(), int((m.weight == 0).sum()))
        for name, m in prunable_layers(model, layer_types)))


def l1_unstructured(model: nn.Module, amount: float, scope: str = "layer",
                    layer_types: tuple[type, ...] = PRUNABLE, permanent: bool = True) -> SparsityReport:
    """Zero the ``amount`` fraction of smallest-|w| weights, per layer or across all layers (``scope="global"``),
    in place. ``permanent`` removes the masks (``prune.remove``) so exporters see plain weights; leave it False
    to fine-tune with the masks in force, then call :func:`make_permanent`."""
    if not 0.0 <= amount < 1.0:
        raise EdgekitError(f"pruning amount {amount} must be in [0, 1)")
    layers = prunable_layers(model, layer_types)
    if not layers:
        raise EdgekitError("the model has no Conv2d or Linear layer to prune")
    if scope == "global":
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                  amount=amount)
    elif scope == "layer":
        for _, m in layers:
            prune.l1_unstructured(m, "weight", amount=amount)
    else:
        raise EdgekitError(f"pruning scope {scope!r} must be 'layer' or 'global'")
    if permanent:
        make_permanent(model)
    return sparsity_report(model, layer_types)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its weight (``prune.remove``)."""
    for _, m in model.named_modules():
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    return model


def prune_model(model: nn.Module, pruning_rate: float = 0.2) -> nn.Module:
    """The one-call API of our source documents: L1-prune every Conv2d and Linear by ``pruning_rate``."""
    with torch.no_grad():
        l1_unstructured(model, pruning_rate)
    return model
