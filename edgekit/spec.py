"""What a model source yields: the module, its example inputs, and the names the rest of the chain uses."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime side (bench workers, device runners) never imports torch
    from collections.abc import Callable

    import numpy as np
    import torch

    from edgekit.data.preprocess import Preprocess

    Tokenize = Callable[[list[str], list[str] | None], dict[str, np.ndarray]]


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
    # axes beyond the batch whose size varies, by input name (a sentence encoder: {"input_ids": (1,),
    # "attention_mask": (1,)}); they share one dimension, "length". Dynamic on runtimes that allow it, one signature
    # per entry of ``lengths`` on runtimes that do not; validation runs at every length.
    dynamic_axes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    lengths: tuple[int, ...] = ()  # filled in when the source is loaded: default half and all of the example's
    # sentences (and the second sentences of pairs, or None) -> the text inputs at the example's length: how text
    # data files (.txt, .jsonl, .csv) become inputs. None: the model takes no text files
    tokenize: Tokenize | None = None
    # files that travel with the model into every target folder (``assets/``) and bundle, e.g. a tokenizer's
    assets: tuple[Path, ...] = ()

    def length_axes(self) -> dict[int, tuple[int, ...]]:
        """The dynamic axes by input position."""
        return {i: self.dynamic_axes[n] for i, n in enumerate(self.input_names) if n in self.dynamic_axes}
