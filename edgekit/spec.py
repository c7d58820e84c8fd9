"""What a model source yields: the module, its example inputs, and the names the rest of the chain uses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime side (bench workers, device runners) never imports torch
    import torch

    from edgekit.data.preprocess import Preprocess


@dataclass(frozen=True)
class ModelSpec:
    """A factory's answer. ``example_inputs`` should have a batch of >= 2 so exporters keep the batch dynamic."""

    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    task: str | None = None  # a name in edgekit.data.tasks, for task accuracy on real data
    attention_outputs: tuple[str, ...] = ()  # outputs that are attention weights (rows sum to 1)
    labels: tuple[str, ...] = field(default=())
    # how an image file becomes the image input: a preset name ("mnist", "imagenet", "inception") or a Preprocess;
    # resolved against the input's shape when the source is loaded
    preprocess: Preprocess | str | None = None
