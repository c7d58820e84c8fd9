"""GPTQ rounding (Frantar et al., 2022) of a torch model's weights onto the int8 grid that every backend's
quantizer uses for weights: symmetric, narrow range [-127, 127], scale = max |w| / 127 per output channel (or per
tensor). The weights stay float in the torch model, so each runtime's own quantizer, run afterwards as usual,
finds values already on its grid and keeps them. A per-channel grid survives the batch-norm folding the
converters do, because folding scales whole output channels.

Nearest rounding makes each weight's error as small as it can be alone; GPTQ rounds one input column at a time
and moves the error it made onto the columns not yet rounded, weighted by the inverse Hessian of the layer's
output error on calibration inputs (H = X X^T). The layer then computes nearly what it did in float on the
inputs it really sees. Hessians come from one float pass: each layer sees the float model's inputs.
"""
from __future__ import annotations

import copy
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.data.sources import Dataset
from edgekit.spec import ModelSpec

QMAX = 127  # int8 weights, narrow range: the quantizers of all four backends use [-127, 127]
POSITIONS = 1024  # patches per sample a conv's Hessian is taken from (EfficientNet's stem has 12544)


@dataclass(frozen=True)
class Rounding:
    """What the rounding did, for the manifest."""

    method: str
    layers: tuple[str, ...]  # weight layers rounded by GPTQ
    skipped: dict[str, str] = field(default_factory=dict)  # weight layer -> why it kept nearest rounding
    samples: int = 0
    damp: float = 0.01
    seconds: float = 0.0
    max_pinned: int = 0  # output channels whose largest weight had drifted off +-127 and was put back
    per_channel: bool = True

    def record(self) -> dict:
        grid = "per output channel" if self.per_channel else "per tensor"
        return {"method": self.method, "layers": len(self.layers), "skipped": self.skipped,
                "samples": self.samples, "damp": self.damp, "seconds": round(self.seconds, 1),
                "max_pinned": self.max_pinned,
                "how": f"GPTQ on the torch weights before export ({grid}, symmetric, [-127, 127]); the runtime's "
                       "quantizer then finds them on its grid"}


class _Hessians:
    """Accumulates X X^T of each weight layer's real inputs, seen through the functional conv2d / linear calls
    (so a conv subclass that pads in its own forward is seen with its padded input)."""

    def __init__(self, layers: dict[str, torch.nn.Module]) -> None:
        self.by_weight = {id(m.weight): name for name, m in layers.items()}
        self.h: dict[str, torch.Tensor] = {}
        self.rng = torch.Generator().manual_seed(0)

    def _add(self, name: str, h: torch.Tensor) -> None:
        self.h[name] = self.h[name] + h if name in self.h else h

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> None:
        name = self.by_weight.get(id(weight))
        if name is not None:
            cols = x.detach().reshape(-1, x.shape[-1]).float()
            self._add(name, (cols.T @ cols)[None].double())

    def conv2d(self, x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> None:
        name = self.by_weight.get(id(weight))
        if name is None or x.dim() != 4:
            return
        kernel = tuple(weight.shape[2:])
        dilation = _pair(dilation)
        if isinstance(padding, str):
            if padding == "same":
                total = [d * (k - 1) for d, k in zip(dilation, kernel)]
                x = F.pad(x, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2))
            padding = 0
        x = x.detach().float()
        if kernel == (1, 1) and _pair(stride) == (1, 1) and _pair(padding) == (0, 0):
            cols = x.transpose(0, 1).reshape(x.shape[1], 1, -1)  # (channels, 1, n * positions)
        else:
            cols = F.unfold(x, kernel, dilation=dilation, padding=_pair(padding), stride=_pair(stride))
            cols = cols.transpose(0, 1).reshape(cols.shape[1], 1, -1)
        # a seeded subset of the patches: the damping is relative, so only the shape of H matters
        if cols.shape[2] > POSITIONS * len(x):
            keep = torch.randperm(cols.shape[2], generator=self.rng)[:POSITIONS * len(x)]
            cols = cols[:, :, keep]
        rows, positions = cols.shape[0], cols.shape[2]
        # unfold orders rows channel-major, so a group's rows are contiguous
        cols = cols.view(groups, rows // groups, positions)
        h = torch.einsum("gip,gjp->gij", cols, cols) if groups > 1 else (cols[0] @ cols[0].T)[None]
        self._add(name, h.double())


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def weight_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The layers whose weights the backends quantize to int8: Conv2d and Linear."""
    return {name: m for name, m in module.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.weight is not None}


def _observe(module: torch.nn.Module, layers: dict[str, torch.nn.Module], batches: list[tuple[torch.Tensor, ...]]
             ) -> _Hessians:
    seen = _Hessians(layers)
    conv2d, linear = F.conv2d, F.linear

    def conv2d_seen(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        seen.conv2d(x, weight, stride, padding, dilation, groups)
        return conv2d(x, weight, bias, stride, padding, dilation, groups)

    def linear_seen(x, weight, bias=None):
        seen.linear(x, weight)
        return linear(x, weight, bias)

    F.conv2d, F.linear = conv2d_seen, linear_seen  # restored below, whatever happens
    try:
        with torch.no_grad():
            for batch in batches:
                module(*batch)
    finally:
        F.conv2d, F.linear = conv2d, linear
    return seen


def gptq_groups(weight: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, damp: float) -> torch.Tensor:
    """GPTQ of ``weight`` (groups, rows, cols) under ``hessian`` (groups, cols, cols) with per-row ``scale``
    (groups, rows, 1): the integer levels in [-127, 127]."""
    w = weight.clone().double()
    h = hessian.clone().double()
    cols = w.shape[2]
    diag = torch.diagonal(h, dim1=1, dim2=2)
    dead = diag == 0  # an input that is always zero: its weights do not matter, keep the Cholesky defined
    diag[dead] = 1.0
    order = torch.argsort(diag, dim=1, descending=True)  # "act order": the most used inputs first
    w = torch.gather(w, 2, order[:, None, :].expand_as(w))
    h = torch.gather(torch.gather(h, 1, order[:, :, None].expand_as(h)), 2, order[:, None, :].expand_as(h))
    eye = torch.eye(cols, dtype=h.dtype)
    for attempt in range(4):
        try:
            damped = h + (damp * 10 ** attempt) * torch.diagonal(h, dim1=1, dim2=2).mean(1)[:, None, None] * eye
            upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
            break
        except torch.linalg.LinAlgError:
            continue
    else:
        raise torch.linalg.LinAlgError("the layer's Hessian is not positive definite even with 1000x damping")
    s = scale.double()
    q = torch.zeros_like(w)
    for i in range(cols):
        column = w[:, :, i]
        level = torch.clamp(torch.round(column / s[:, :, 0]), -QMAX, QMAX)
        q[:, :, i] = level
        err = (column - level * s[:, :, 0]) / upper[:, i, i][:, None]
        w[:, :, i + 1:] -= err[:, :, None] * upper[:, None, i, i + 1:]
    return torch.gather(q, 2, torch.argsort(order, dim=1)[:, None, :].expand_as(q))


def _pin(levels: torch.Tensor, weight: torch.Tensor) -> int:
    """The runtime derives each scale from the largest weight of its rows (out, cols): where GPTQ moved that
    weight off +-127, put it back, so the scale is the one rounded to. Returns how many were put back."""
    top = weight.abs().argmax(dim=1, keepdim=True)
    drifted = levels.abs().amax(dim=1, keepdim=True) < QMAX
    sign = torch.sign(torch.gather(weight, 1, top)).to(levels.dtype)
    levels.scatter_(1, top, torch.where(drifted, sign * QMAX, torch.gather(levels, 1, top)))
    return int(drifted.sum())


def grid_scale(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Per output channel (or whole tensor) max |w| / 127, shape (out, 1)."""
    flat = weight.detach().reshape(weight.shape[0], -1).abs()
    top = flat.amax(dim=1, keepdim=True) if per_channel else flat.max().expand(weight.shape[0], 1)
    return torch.where(top > 0, top / QMAX, torch.ones_like(top))


def nearest(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with every weight layer rounded to the nearest point of its per-channel int8 grid:
    what a runtime's quantizer does on its own, the baseline GPTQ is measured against."""
    out = copy.deepcopy(module)
    with torch.no_grad():
        for layer in weight_layers(out).values():
            w = layer.weight.reshape(len(layer.weight), -1)
            scale = grid_scale(layer.weight, True)
            layer.weight.copy_((torch.clamp(torch.round(w / scale), -QMAX, QMAX) * scale).reshape(layer.weight.shape))
    return out


def round_layer(layer: torch.nn.Module, hessian: torch.Tensor, per_channel: bool, damp: float) -> int:
    """Replace ``layer.weight`` with its GPTQ rounding (float values on the int8 grid); returns the rows pinned."""
    weight = layer.weight.detach()
    groups = getattr(layer, "groups", 1)
    out = weight.shape[0]
    scale = grid_scale(weight, per_channel).double()
    w = weight.reshape(groups, out // groups, -1).double()
    levels = gptq_groups(w, hessian, scale.reshape(groups, out // groups, 1), damp).reshape(out, -1)
    # per channel every row has its own largest weight; per tensor only the whole tensor's counts
    flat = w.reshape(out, -1)
    pinned = _pin(levels, flat) if per_channel else _pin(levels.reshape(1, -1), flat.reshape(1, -1))
    rounded = (levels * scale).reshape(weight.shape).to(weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(rounded)
    return pinned


def gptq(spec: ModelSpec, calib: Dataset, *, per_channel: bool = True, damp: float = 0.01, batch: int = 8,
         skip: Callable[[str], bool] = lambda name: False) -> tuple[ModelSpec, Rounding]:
    """A copy of ``spec`` whose Conv2d / Linear weights are GPTQ-rounded on ``calib`` (the original is not
    touched). Layers named by ``skip`` (kept in float) and layers never called through conv2d / linear keep their
    weights."""
    start = time.perf_counter()
    module = copy.deepcopy(spec.module).eval()
    layers = {n: m for n, m in weight_layers(module).items() if not skip(n)}
    names = spec.input_names or tuple(calib.inputs)
    batches = [tuple(torch.from_numpy(np.ascontiguousarray(b[n])) for n in names) for b in calib.batches(batch)]
    seen = _observe(module, layers, batches)
    done, skipped, pinned = [], {}, 0
    for name, layer in layers.items():
        if name not in seen.h:
            skipped[name] = "not called through conv2d / linear in the forward"
            continue
        try:
            pinned += round_layer(layer, seen.h[name], per_channel, damp)
        except torch.linalg.LinAlgError as exc:
            skipped[name] = str(exc)
            continue
        done.append(name)
    rounding = Rounding("gptq", tuple(done), skipped, len(calib), damp, time.perf_counter() - start, pinned,
                        per_channel)
    return replace(spec, module=module), rounding


def with_weights_of(rounded: ModelSpec, original: ModelSpec, modules: list[str]) -> ModelSpec:
    """A copy of ``rounded`` whose weight layers among ``modules`` have ``original``'s weights again. Every
    layer's rounding was computed on the float model's inputs, so the other layers' stay what GPTQ made them."""
    module = copy.deepcopy(rounded.module)
    source, target = weight_layers(original.module), weight_layers(module)
    with torch.no_grad():
        for name in modules:
            if name in source and name in target:
                target[name].weight.copy_(source[name].weight)
    return replace(rounded, module=module)


# (the model it was made from, its key, the result). The model is held, so the id in the key cannot be reused by
# another model while the entry lives.
_CACHE: list[tuple[torch.nn.Module, tuple, tuple[ModelSpec, Rounding]]] = []


def calibration_digest(calib: Dataset) -> str:
    """A hash of the calibration inputs: the caches of the weight roundings key on it."""
    digest = hashlib.sha256()
    for name in sorted(calib.inputs):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(calib.inputs[name]).tobytes())
    return digest.hexdigest()


def kept_in_float(keep_float: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a module path matches one of the ``keep_float`` regexes."""
    return lambda name: any(re.search(p, name) for p in keep_float)


def cached_gptq(spec: ModelSpec, calib: Dataset, *, per_channel: bool, keep_float: tuple[str, ...] = (),
                damp: float = 0.01) -> tuple[ModelSpec, Rounding]:
    """``gptq`` once per model, calibration data and settings in this process: the targets of one export share
    it. Layers matching ``keep_float`` (regexes of module paths) keep their weights."""
    key = (calibration_digest(calib), per_channel, keep_float, damp)
    if not _CACHE or _CACHE[0][0] is not spec.module or _CACHE[0][1] != key:
        result = gptq(spec, calib, per_channel=per_channel, damp=damp, skip=kept_in_float(keep_float))
        _CACHE[:] = [(spec.module, key, result)]  # one model at a time: a rounded copy is as big as the model
    return _CACHE[0][2]
