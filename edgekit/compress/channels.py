"""Structured channel pruning with torch-pruning's dependency graph: coupled layers (residuals, attention
projections, bare parameters such as positional embeddings) shrink together, so the model really gets smaller.
What the trace cannot show (attention heads, the spatial gate, the fusion head's concatenation) is taught through
torch-pruning's customized pruners (pruners.py); the result is run before anyone uses it."""
from __future__ import annotations

import math

import torch
from torch import nn

from edgekit.compress.timelimit import time_limit
from edgekit.errors import EdgekitError

GRAPH_SECONDS = 30  # a bound for models nobody taught torch-pruning; its index search can grow without end
STANDARD = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.Embedding, nn.BatchNorm2d, nn.GroupNorm)


def _unwrapped_parameters(model: nn.Module, customized: tuple[type, ...]) -> list[tuple[nn.Parameter, int]]:
    """Parameters held directly by other modules (class tokens, positional embeddings): pruned on their last
    dimension, the feature dimension they are added to. A customized module's own parameters are its pruner's."""
    return [(param, param.dim() - 1) for module in model.modules() if not isinstance(module, STANDARD + customized)
            for param in module.parameters(recurse=False)]


def _classifier(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise EdgekitError("channel pruning needs a final nn.Linear classifier to keep")
    return linears[-1]


def layer_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _target_ratios(model: nn.Module, ratio: float, round_to: int, keep: nn.Module,
                   groups: dict[nn.Module, int]) -> dict[nn.Module, float]:
    """Per layer: the ratio that leaves a multiple of ``round_to`` channels (at least ``round_to``) closest to the
    asked ratio, with grouped channels (attention heads) left equal per group. torch-pruning's own round_to
    leaves a 10-channel conv untouched at 50% and does not know about groups. A layer that cannot shrink gets 0:
    without an entry it would fall back to the plain ratio."""
    ratios = {}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not keep:
            width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            g = groups.get(m, 1)
            step = round_to // math.gcd(round_to, g)  # per group, so that the total is a multiple of round_to
            per_group = width // g
            target = max(step, step * round(per_group * (1 - ratio) / step))
            # torch-pruning keeps int(per_group * (1 - ratio)) per group: aim half a channel above to be immune
            # to float rounding
            ratios[m] = 1 - (target + 0.5) / per_group if target < per_group else 0.0
    return ratios


def _output_shapes(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[tuple[int, ...]]:
    with torch.no_grad():
        out = model.eval()(*example_inputs)
    return [tuple(t.shape) for t in (out if isinstance(out, (tuple, list)) else (out,))]


def check_runs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], expected: list[tuple[int, ...]]) -> None:
    """The pruned model must run on the example inputs and give outputs of the original shapes."""
    try:
        shapes = _output_shapes(model, example_inputs)
    except Exception as e:  # the pruned model, not our code: whatever it raises is the answer
        raise EdgekitError(f"channel pruning left the model inconsistent ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); use --prune l1:AMOUNT instead") from None
    if shapes != expected:
        raise EdgekitError(f"channel pruning changed the output shapes from {expected} to {shapes}; "
                           "use --prune l1:AMOUNT instead")


def _prune(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], ratio: float, round_to: int) -> None:
    import torch_pruning as tp

    from edgekit.compress.pruners import CUSTOMIZED_PRUNERS, channel_groups

    classifier = _classifier(model)
    pruner = tp.pruner.MetaPruner(
        model, example_inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        pruning_ratio_dict=_target_ratios(model, ratio, round_to, classifier, channel_groups(model)),
        ignored_layers=[classifier], customized_pruners=CUSTOMIZED_PRUNERS,
        unwrapped_parameters=_unwrapped_parameters(model, tuple(CUSTOMIZED_PRUNERS)),
        output_transform=lambda out: (out[0] if isinstance(out, (tuple, list)) else out).sum())
    pruner.step()


def prune_channels(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], ratio: float,
                   round_to: int = 8) -> tuple[nn.Module, dict[str, tuple[int, int]]]:
    """Remove ``ratio`` of the channels (L1 magnitude, per dependency group) in place; channel counts are
    rounded to multiples of ``round_to`` where a layer is wide enough. Returns the model and, per layer,
    (width before, width after). Raises EdgekitError if torch-pruning cannot prune the model consistently."""
    expected = _output_shapes(model, example_inputs)
    before = layer_widths(model)
    try:
        with time_limit(GRAPH_SECONDS, f"torch-pruning could not resolve this model's channel dependencies within "
                        f"{GRAPH_SECONDS} s; use --prune l1:AMOUNT (unstructured) instead"):
            _prune(model, example_inputs, ratio, round_to)
    except EdgekitError:
        raise
    except Exception as e:  # torch-pruning's graph code failing on a model it does not understand
        raise EdgekitError(f"torch-pruning could not prune this model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); use --prune l1:AMOUNT instead") from None
    check_runs(model, example_inputs, expected)
    after = layer_widths(model)
    return model, {name: (before[name], after[name]) for name in before if before[name] != after.get(name)}
