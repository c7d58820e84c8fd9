"""Structured channel pruning with torch-pruning's dependency graph: coupled layers (residuals, attention
projections, bare parameters such as positional embeddings) shrink together, so the model really gets smaller."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import torch
from torch import nn

from edgekit.errors import EdgekitError

GRAPH_SECONDS = 30  # torch-pruning's dependency search, seconds (its memory grows fast when it is lost)


@contextlib.contextmanager
def time_limit(seconds: int, message: str) -> Iterator[None]:
    """Raise EdgekitError if the block runs longer (main thread only; torch-pruning's search is pure Python)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_):
        raise EdgekitError(message)
    previous = signal.signal(signal.SIGALRM, expire)
    # re-fire every 0.2 s after the limit: an exception raised while the handler happens to run inside a garbage
    # collector callback (jax, imported by litert-torch, installs one) is swallowed by Python
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.2)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


STANDARD = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.Embedding, nn.BatchNorm2d, nn.GroupNorm)


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that split q/k/v projections into heads (our MultiHeadAttention and look-alikes)."""
    return [m for m in model.modules()
            if all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "num_heads", "head_dim"))]


def _unwrapped_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Parameters held directly by custom modules (class tokens, positional embeddings): pruned on their last
    dimension, the feature dimension they are added to."""
    found = []
    for module in model.modules():
        if isinstance(module, STANDARD):
            continue
        for param in module.parameters(recurse=False):
            found.append((param, param.dim() - 1))
    return found


def _classifier(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise EdgekitError("channel pruning needs a final nn.Linear classifier to keep")
    return linears[-1]


def layer_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _target_ratios(model: nn.Module, ratio: float, round_to: int, keep: nn.Module) -> dict[nn.Module, float]:
    """Per layer: the ratio that leaves a multiple of ``round_to`` channels (at least ``round_to``) closest to
    the asked ratio. torch-pruning's own round_to leaves a 10-channel conv untouched at 50%."""
    ratios = {}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not keep:
            width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            target = max(round_to, round_to * round(width * (1 - ratio) / round_to))
            if target < width:
                ratios[m] = 1 - target / width
    return ratios


def _pruner(tp, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], ratio: float, round_to: int,
            classifier: nn.Module, num_heads: dict):
    return tp.pruner.MetaPruner(
        model, example_inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        pruning_ratio_dict=_target_ratios(model, ratio, round_to, classifier), ignored_layers=[classifier],
        num_heads=num_heads, prune_head_dims=True, prune_num_heads=False,
        unwrapped_parameters=_unwrapped_parameters(model),
        output_transform=lambda out: (out[0] if isinstance(out, (tuple, list)) else out).sum())


def prune_channels(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], ratio: float,
                   round_to: int = 8) -> tuple[nn.Module, dict[str, tuple[int, int]]]:
    """Remove ``ratio`` of the channels (L1 magnitude, per dependency group) in place; channel counts are
    rounded to multiples of ``round_to`` where a layer is wide enough. Returns the model and, per layer,
    (width before, width after)."""
    import torch_pruning as tp

    before = layer_widths(model)
    attention = _attention_modules(model)
    num_heads = {proj: a.num_heads for a in attention for proj in (a.q_proj, a.k_proj, a.v_proj)}
    classifier = _classifier(model)
    # On a model that gates features with a reshaped attention map (AttentionCNN) torch-pruning 1.6's
    # index mapping grows without bound (measured: 13 GB and no end); stop it and say so.
    with time_limit(GRAPH_SECONDS, f"torch-pruning could not resolve this model's channel dependencies within "
                    f"{GRAPH_SECONDS} s; use --prune l1:AMOUNT (unstructured) instead"):
        pruner = _pruner(tp, model, example_inputs, ratio, round_to, classifier, num_heads)
        pruner.step()
    for a in attention:  # the forward reshapes with these; keep them true to the pruned projections
        a.num_heads = pruner.num_heads.get(a.q_proj, a.num_heads)
        a.head_dim = a.q_proj.out_features // a.num_heads
    after = layer_widths(model)
    return model, {name: (before[name], after[name]) for name in before if before[name] != after.get(name)}
