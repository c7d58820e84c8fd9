"""The fuzzer's random networks: model ``index`` of ``seed`` is built from (seed, index) alone, a random chain of
conv / depthwise / norm / activation / pooling / residual / concat / space-to-depth / self-attention blocks and a
linear head, resampled until torch's output is finite and sane; ``factory`` is what a generated model file's
factories return."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

# independent random streams per model: a new use of randomness never shifts the others
ARCH, WEIGHTS, EXAMPLE, VALIDATION, CALIBRATION, FRESH = range(6)
MAX_ATTEMPTS = 20
MAX_OUTPUT = 1e3  # a model whose torch output is larger than this is resampled: not a sane network

Shape = tuple[int, int, int]  # C, H, W of the feature map (batch excluded)


# ---------------------------------------------------------------- blocks

class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Concat(nn.Module):
    """Two branches of the same input, joined on channels (Inception / fire modules)."""

    def __init__(self, left: nn.Module, right: nn.Module) -> None:
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.left(x), self.right(x)], 1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each position, as ConvNeXt does: exercises two permutes."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SpaceToDepth(nn.Module):
    """A 6-D reshape + permute: the batch stays -1 so exporters keep it dynamic."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.c, self.h, self.w = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.c, self.h // 2, 2, self.w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(-1, self.c * 4, self.h // 2, self.w // 2)


class SpatialAttention(nn.Module):
    """Pre-norm self-attention over the H*W positions with a residual, through nn.MultiheadAttention or a
    hand-written softmax(QK^T)V (the two lower to different graphs)."""

    def __init__(self, shape: Shape, heads: int, hand_written: bool) -> None:
        super().__init__()
        self.c, self.h, self.w = shape
        self.heads = heads
        self.norm = nn.LayerNorm(self.c)
        if hand_written:
            self.qkv, self.proj = nn.Linear(self.c, 3 * self.c), nn.Linear(self.c, self.c)
        else:
            self.mha = nn.MultiheadAttention(self.c, heads, batch_first=True)

    def _hand_written(self, t: torch.Tensor) -> torch.Tensor:
        length, d = self.h * self.w, self.c // self.heads
        q, k, v = (p.reshape(-1, length, self.heads, d).transpose(1, 2) for p in self.qkv(t).chunk(3, -1))
        weights = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, -1)
        return self.proj((weights @ v).transpose(1, 2).reshape(-1, length, self.c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        normed = self.norm(tokens)
        if hasattr(self, "mha"):
            attended = self.mha(normed, normed, normed, need_weights=False)[0]
        else:
            attended = self._hand_written(normed)
        return (tokens + attended).transpose(1, 2).reshape(-1, self.c, self.h, self.w)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class Head(nn.Module):
    """Feature map -> vector (flatten or global mean) -> optional hidden layer -> optional fusion of a second
    input by concat -> logits."""

    def __init__(self, features: int, pool: str, hidden: int, activation: str, extra: int, classes: int) -> None:
        super().__init__()
        self.pool = pool
        self.hidden = nn.Sequential(nn.Linear(features, hidden), ACTIVATIONS[activation]()) if hidden else None
        self.out = nn.Linear((hidden or features) + extra, classes)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        v = x.flatten(1) if self.pool == "flatten" else x.mean((2, 3))
        if self.hidden is not None:
            v = self.hidden(v)
        if extra is not None:
            v = torch.cat([v, extra], 1)
        return self.out(v)


class FuzzNet(nn.Module):
    def __init__(self, blocks: list[nn.Module], head: Head) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(image))


class FuzzNetTwoInputs(FuzzNet):
    """The same with a vector input fused into the head: input names are the forward's parameter names."""

    def forward(self, image: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.head(self.blocks(image), extra)


# ---------------------------------------------------------------- the random architecture

Made = tuple[nn.Module, Shape, dict[str, Any]]  # the block, its output shape, its parameters for the summary


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv(rng: np.random.Generator, shape: Shape, depthwise: bool = False) -> Made | None:
    c, h, w = shape
    kernel = int(rng.choice([1, 3, 5]))
    stride = int(rng.choice([1, 1, 2]))
    padding = int(rng.choice([0, kernel // 2]))
    oh, ow = _conv_out(h, kernel, stride, padding), _conv_out(w, kernel, stride, padding)
    if min(oh, ow) < 2:
        return None
    out = c if depthwise else int(rng.integers(2, 33))
    conv = nn.Conv2d(c, out, kernel, stride, padding, groups=c if depthwise else 1, bias=bool(rng.random() < 0.7))
    return conv, (out, oh, ow), {"kernel": kernel, "stride": stride, "padding": padding}


def _depthwise(rng: np.random.Generator, shape: Shape) -> Made | None:
    return _conv(rng, shape, depthwise=True)


def _batchnorm(rng: np.random.Generator, shape: Shape) -> Made:
    return nn.BatchNorm2d(shape[0]), shape, {}


def _layernorm(rng: np.random.Generator, shape: Shape) -> Made:
    if rng.random() < 0.5:
        return ChannelLayerNorm(shape[0]), shape, {"over": "channels"}
    return nn.LayerNorm(list(shape)), shape, {"over": "C,H,W"}


def _groupnorm(rng: np.random.Generator, shape: Shape) -> Made:
    groups = int(rng.choice([g for g in (1, 2, 4, 8) if shape[0] % g == 0]))
    return nn.GroupNorm(groups, shape[0]), shape, {"groups": groups}


def _activation(rng: np.random.Generator, shape: Shape) -> Made:
    name = str(rng.choice(list(ACTIVATIONS)))
    return ACTIVATIONS[name](), shape, {"fn": name}


def _pool(rng: np.random.Generator, shape: Shape) -> Made | None:
    c, h, w = shape
    kind = str(rng.choice(["max2", "max3s2", "avg2", "adaptive"]))
    if kind == "adaptive":  # sizes that do not divide H, W give uneven windows
        oh, ow = int(rng.integers(1, min(h, 7) + 1)), int(rng.integers(1, min(w, 7) + 1))
        return nn.AdaptiveAvgPool2d((oh, ow)), (c, oh, ow), {"kind": kind}
    if min(h, w) < 4:
        return None
    if kind == "max3s2":  # the ResNet stem's pool
        return nn.MaxPool2d(3, 2, 1), (c, _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)), {"kind": kind}
    pool = nn.MaxPool2d(2) if kind == "max2" else nn.AvgPool2d(2)
    return pool, (c, h // 2, w // 2), {"kind": kind}


def _residual(rng: np.random.Generator, shape: Shape) -> Made:
    c = shape[0]
    act = str(rng.choice(list(ACTIVATIONS)))
    if rng.random() < 0.5:  # a basic block
        body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), ACTIVATIONS[act](), nn.Conv2d(c, c, 3, 1, 1))
        kind = "conv3-bn-act-conv3"
    else:  # an inverted-residual-like depthwise + pointwise
        body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c), ACTIVATIONS[act](), nn.Conv2d(c, c, 1))
        kind = "dw3-act-pw"
    return Residual(body), shape, {"body": kind, "fn": act}


def _concat(rng: np.random.Generator, shape: Shape) -> Made:
    c, h, w = shape
    left, right = int(rng.integers(1, 17)), int(rng.integers(1, 17))
    act = str(rng.choice(list(ACTIVATIONS)))
    block = Concat(nn.Conv2d(c, left, 1), nn.Sequential(nn.Conv2d(c, right, 3, 1, 1), ACTIVATIONS[act]()))
    return block, (left + right, h, w), {"branches": [left, right], "fn": act}


def _space_to_depth(rng: np.random.Generator, shape: Shape) -> Made | None:
    c, h, w = shape
    if h % 2 or w % 2 or c * 4 > 64 or min(h, w) < 4:
        return None
    return SpaceToDepth(shape), (c * 4, h // 2, w // 2), {}


def _attention(rng: np.random.Generator, shape: Shape) -> Made | None:
    c, h, w = shape
    if h * w > 256 or c < 2:
        return None
    heads = int(rng.choice([n for n in (1, 2, 4) if c % n == 0]))
    hand_written = bool(rng.random() < 0.5)
    return SpatialAttention(shape, heads, hand_written), shape, {
        "heads": heads, "impl": "softmax(QK^T)V" if hand_written else "nn.MultiheadAttention"}


# a handler table, not an isinstance ladder: block name -> maker (None when it does not fit the shape)
BLOCKS: dict[str, Callable[[np.random.Generator, Shape], Made | None]] = {
    "conv": _conv, "depthwise": _depthwise, "batchnorm": _batchnorm, "layernorm": _layernorm,
    "groupnorm": _groupnorm, "activation": _activation, "pool": _pool, "residual": _residual, "concat": _concat,
    "space_to_depth": _space_to_depth, "attention": _attention}


@dataclass
class Built:
    """A generated model: the module, its example inputs and a summary of its architecture."""

    seed: int
    index: int
    module: nn.Module
    inputs: dict[str, tuple[int, ...]]  # per input name, the shape without the batch
    example: tuple[torch.Tensor, ...]
    blocks: list[dict[str, Any]] = field(default_factory=list)
    attempt: int = 0

    def summary(self) -> dict[str, Any]:
        return {"inputs": {k: list(v) for k, v in self.inputs.items()}, "blocks": self.blocks,
                "attempt": self.attempt, "parameters": sum(p.numel() for p in self.module.parameters())}


def _head(rng: np.random.Generator, shape: Shape, extra: int) -> tuple[Head, dict[str, Any]]:
    features = int(np.prod(shape))
    pool = "flatten" if features <= 2048 and rng.random() < 0.5 else "mean"
    features = features if pool == "flatten" else shape[0]
    hidden = int(rng.integers(4, 65)) if rng.random() < 0.5 else 0
    activation = str(rng.choice(list(ACTIVATIONS)))
    classes = int(rng.integers(2, 11))
    params = {"block": "head", "pool": pool, "hidden": hidden, "fn": activation if hidden else None,
              "extra": extra, "out": [classes]}
    return Head(features, pool, hidden, activation, extra, classes), params


def _architecture(rng: np.random.Generator, shape: Shape, extra: int) -> tuple[list[nn.Module], Head, list[dict]]:
    blocks, summary = [], []
    depth = int(rng.integers(2, 8))
    while len(blocks) < depth:
        name = str(rng.choice(list(BLOCKS)))
        made = BLOCKS[name](rng, shape)
        if made is None:
            continue
        block, shape, params = made
        blocks.append(block)
        summary.append({"block": name, **params, "out": list(shape)})
    head, params = _head(rng, shape, extra)
    return blocks, head, summary + [params]


def _randomize(module: nn.Module, rng: np.random.Generator) -> None:
    """Kaiming-scaled weights from our own generator (torch's global RNG is left alone), norms that are not
    identity: scale around 1, shifted running statistics."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                value = rng.normal(0, np.sqrt(2 / fan_in), p.shape)
            elif name.endswith("weight"):
                value = 1 + 0.2 * rng.normal(size=p.shape)
            else:
                value = 0.1 * rng.normal(size=p.shape)
            p.copy_(torch.from_numpy(value))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.from_numpy(0.3 * rng.normal(size=m.num_features)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, m.num_features)))


def random_inputs(inputs: dict[str, tuple[int, ...]], samples: int, rng: np.random.Generator
                  ) -> dict[str, np.ndarray]:
    return {name: rng.normal(size=(samples, *shape)).astype(np.float32) for name, shape in inputs.items()}


def _attempt(seed: int, index: int, attempt: int) -> Built:
    rng = np.random.default_rng([seed, index, attempt, ARCH])
    shape = (int(rng.integers(1, 9)), int(rng.integers(8, 33)), int(rng.integers(8, 33)))
    extra = int(rng.integers(2, 17)) if rng.random() < 0.3 else 0
    blocks, head, summary = _architecture(rng, shape, extra)
    module = (FuzzNetTwoInputs if extra else FuzzNet)(blocks, head)
    _randomize(module, np.random.default_rng([seed, index, attempt, WEIGHTS]))
    inputs = {"image": shape, **({"extra": (extra,)} if extra else {})}
    example = random_inputs(inputs, 2, np.random.default_rng([seed, index, attempt, EXAMPLE]))
    return Built(seed, index, module.eval(), inputs, tuple(torch.from_numpy(v) for v in example.values()),
                 summary, attempt)


def build(seed: int, index: int) -> Built:
    """Model ``index`` of ``seed``: resampled (deterministically) until torch's output is finite and sane."""
    for attempt in range(MAX_ATTEMPTS):
        built = _attempt(seed, index, attempt)
        check = random_inputs(built.inputs, 8, np.random.default_rng([seed, index, attempt, FRESH]))
        out = torch_outputs(built.module, check)["output_0"]
        if np.isfinite(out).all() and np.abs(out).max() < MAX_OUTPUT:
            return built
    raise RuntimeError(f"seed {seed} model {index}: no sane model in {MAX_ATTEMPTS} attempts")


def factory(seed: int, index: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """What the generated model file's factories return, as a user's factory would."""
    built = build(seed, index)
    return built.module, built.example


def torch_outputs(module: nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(v) for v in inputs.values()))
    return {"output_0": out.numpy()}
