"""The built-in models, each with trained weights in sample_data/weights (safetensors)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edgekit.data.captions import SEQ_LEN, vocabulary
from edgekit.data.mnist import sample_data_root
from edgekit.errors import EdgekitError
from edgekit.spec import ModelSpec
from edgekit.zoo.cnn import AttentionCNN, SimpleCNN
from edgekit.zoo.fusion import FusionNet
from edgekit.zoo.transformer import TransformerClassifier

DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], torch.nn.Module]
    task: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    attention_outputs: tuple[str, ...] = ()


def _image(batch: int) -> torch.Tensor:
    return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))


ZOO: dict[str, ZooEntry] = {
    "cnn": ZooEntry(SimpleCNN, "mnist", ("image",), ("logits",)),
    "attention": ZooEntry(AttentionCNN, "mnist", ("image",), ("logits", "attention"), ("attention",)),
    "fusion": ZooEntry(FusionNet, "mnist-fusion", ("image", "tokens"), ("logits", "attention"), ("attention",)),
    "transformer": ZooEntry(TransformerClassifier, "mnist", ("image",), ("logits", "attention"), ("attention",)),
}


def weights_path(name: str) -> Path:
    return sample_data_root() / "weights" / f"{name}.safetensors"


def example_inputs(name: str, batch: int = 2) -> tuple[torch.Tensor, ...]:
    if ZOO[name].input_names == ("image", "tokens"):
        tokens = torch.randint(2, len(vocabulary()), (batch, SEQ_LEN), generator=torch.Generator().manual_seed(0))
        return _image(batch), tokens
    return (_image(batch),)


def load(name: str, pretrained: bool = True) -> ModelSpec:
    """A zoo model in eval mode with its trained weights (``pretrained=False``: freshly initialized)."""
    if name not in ZOO:
        raise EdgekitError(f"unknown zoo model {name!r}; the zoo has: {', '.join(ZOO)}")
    entry = ZOO[name]
    module = entry.build()
    if pretrained:
        from safetensors.torch import load_file

        path = weights_path(name)
        if not path.is_file():
            raise EdgekitError(f"no trained weights for zoo:{name} at {path}; run dev/train_zoo.py")
        module.load_state_dict(load_file(path))
    return ModelSpec(module.eval(), example_inputs(name), entry.input_names, entry.output_names, entry.task,
                     entry.attention_outputs, DIGITS, preprocess="mnist")
