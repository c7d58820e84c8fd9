"""What torch-pruning cannot read from a trace, told the way it asks to be told: one ``BasePruningFunc`` per module
type (``customized_pruners={type: pruner}``). Each module below keeps the channels of its inputs in a way the
trace cannot show (heads, a broadcast gate, a concatenation of separately pooled inputs), so its pruner says
how many channels it has, how they group, and how to remove them. torch-pruning then treats the module as one
node and couples everything around it: the projections into and out of the heads, the conv before the gate,
the streams that meet in the classifier."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch_pruning as tp
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.zoo.cnn import SpatialAttention
from edgekit.zoo.fusion import FusionHead
from edgekit.zoo.transformer import AttentionHeads, MultiHeadAttention


def _keep(width: int, idxs: Sequence[int]) -> list[int]:
    drop = set(idxs)
    return [i for i in range(width) if i not in drop]


class AttentionHeadsPruner(tp.pruner.BasePruningFunc):
    """q, k, v and the merged output of the heads share one channel axis (num_heads * head_dim), so pruning it
    on the input side prunes it on the output side: q_proj, k_proj and v_proj lose the same output rows and
    out_proj the same input columns. Channel groups = num_heads: torch-pruning then removes the same positions
    from every head, and head_dim stays one number."""

    TARGET_MODULES = (AttentionHeads,)

    def prune_out_channels(self, layer: AttentionHeads, idxs: Sequence[int]) -> AttentionHeads:
        per_head = Counter(i // layer.head_dim for i in idxs)
        removed = len(idxs) // layer.num_heads
        if any(per_head[h] != removed for h in range(layer.num_heads)) or removed >= layer.head_dim:
            raise EdgekitError(f"channel pruning would leave attention heads of unequal width ({dict(per_head)} "
                               f"of {layer.head_dim} dims removed per head)")
        layer.head_dim -= removed
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: AttentionHeads) -> int:
        return layer.num_heads * layer.head_dim

    get_in_channels = get_out_channels

    def get_out_channel_groups(self, layer: AttentionHeads) -> int:
        return layer.num_heads

    get_in_channel_groups = get_out_channel_groups


class SpatialAttentionPruner(tp.pruner.BasePruningFunc):
    """The gate rescales each position of the features it is given by one weight per position: it keeps their
    channels (in = out), and only its 1x1 scoring conv reads them. Seen through the trace, the [B, 1, H, W] map
    is broadcast over the channels and its positions flattened, which torch-pruning maps to channels without end."""

    TARGET_MODULES = (SpatialAttention,)

    def prune_out_channels(self, layer: SpatialAttention, idxs: Sequence[int]) -> SpatialAttention:
        keep = _keep(layer.weight.shape[1], idxs)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: SpatialAttention) -> int:
        return layer.weight.shape[1]

    get_in_channels = get_out_channels


class FusionHeadPruner(tp.pruner.BasePruningFunc):
    """The classifier's first layer reads ``inputs`` pooled vectors side by side. Channel i of its input stands for
    column i of every block, so the streams meeting here (image, text, cross-attended) lose the same channels.
    Its outputs are the class scores: never pruned (no intra-layer dependency from in to out)."""

    TARGET_MODULES = (FusionHead,)

    def prune_in_channels(self, layer: FusionHead, idxs: Sequence[int]) -> FusionHead:
        width = self.get_in_channels(layer)
        tp.prune_linear_in_channels(layer[0], [block * width + i for block in range(layer.inputs) for i in idxs])
        return layer

    def prune_out_channels(self, layer: FusionHead, idxs: Sequence[int]) -> FusionHead:
        raise EdgekitError("channel pruning reached the class scores of the fusion head")

    def get_in_channels(self, layer: FusionHead) -> int:
        return layer[0].in_features // layer.inputs

    def get_out_channels(self, layer: FusionHead) -> None:
        return None  # not a width to prune


CUSTOMIZED_PRUNERS: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {
    AttentionHeads: AttentionHeadsPruner(),
    SpatialAttention: SpatialAttentionPruner(),
    FusionHead: FusionHeadPruner(),
}


def channel_groups(model: nn.Module) -> dict[nn.Module, int]:
    """Layers whose output channels come in equal groups that must stay equal: the projections into attention heads."""
    return {proj: m.num_heads for m in model.modules() if isinstance(m, MultiHeadAttention)
            for proj in (m.q_proj, m.k_proj, m.v_proj)}
