"""Each backend's ops map back to the torch module they came from (the ledger, keep_float and mixed precision
depend on it), on a model shaped like EfficientNet: blocks in a ModuleList that forward() iterates, each a
convolution with a batch norm that the converters fold into it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.backends import get_backend
from edgekit.errors import EdgekitError
from edgekit.spec import ModelSpec


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self._conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self._bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self._bn(self._conv(x)))


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._stem = nn.Conv2d(3, 8, 3, padding=1)
        self._blocks = nn.ModuleList([Block(8) for _ in range(3)])
        self._fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem(x)
        for block in self._blocks:
            x = block(x)
        return self._fc(x.mean((2, 3)))


def _spec() -> ModelSpec:
    torch.manual_seed(0)
    model = Blocks().eval()
    with torch.no_grad():  # batch norms that are not the identity
        for block in model._blocks:
            block._bn.running_mean.uniform_(-0.5, 0.5)
            block._bn.running_var.uniform_(0.5, 2.0)
    return ModelSpec(model, (torch.randn(2, 3, 16, 16),), ("image",), ("logits",))


def test_litert_names_get_their_iterated_containers_back():
    from edgekit.backends.tflite import container_aliases, module_path_of

    aliases = container_aliases(_spec().module)
    assert aliases["1._conv"] == "_blocks.1._conv" and aliases["2"] == "_blocks.2"
    assert "_stem" not in aliases  # not inside an iterated container: its name is its path
    name = "pkg.Blocks/pkg.Block_1/torch.nn.modules.conv.Conv2d__conv;"
    assert module_path_of(name, aliases) == "_blocks.1._conv"


def test_every_openvino_convolution_knows_its_module():
    try:
        get_backend("openvino")
    except EdgekitError:
        pytest.skip("openvino is not installed")
    from edgekit.backends.openvino import _convert, op_module_paths

    model = _convert(_spec())
    paths = op_module_paths(model)
    convolutions = [paths[op.get_friendly_name()] for op in model.get_ordered_ops()
                    if op.get_type_name() in ("Convolution", "GroupConvolution")]
    assert convolutions == ["_stem", "_blocks.0._conv", "_blocks.1._conv", "_blocks.2._conv"]
