"""Fuzz edgekit with random small networks: every model to every backend, each target classified.

    tools/fuzz.py --models N --seed S --out DIR [--int8] [--keep] [--jobs J]

Model i of seed S is built from (S, i) alone, so it is the same whatever N is. Each model is handed to edgekit as a
user would: a generated ``DIR/fuzz_models.py`` holds one factory per model (``model_17``) that rebuilds it through
this file's :func:`factory`, validated on a ``.npz`` of random inputs. A target ends as PASS / WARN, as the stage
edgekit says it failed in (EXPORT, QUANTIZE, LOAD, RUN, MISMATCH, CRASH, TIMEOUT), or as SILENT: it passed its
gates, yet an independent check (fresh inputs, the artifact opened here, a plain numpy criterion) finds its outputs
wrong. Exit code 1 if any target is SILENT, else 0. ``DIR/fuzz.json`` has every model's blocks and shapes and every
target's outcome and reason.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("PASS", "WARN", "EXPORT", "QUANTIZE", "LOAD", "RUN", "MISMATCH", "CRASH", "TIMEOUT", "SILENT")
# independent random streams per model: a new use of randomness never shifts the others
ARCH, WEIGHTS, EXAMPLE, VALIDATION, CALIBRATION, FRESH = range(6)
VALIDATION_SAMPLES = 64
CALIBRATION_SAMPLES = 128
FRESH_SAMPLES = 32
MAX_ATTEMPTS = 20
MAX_OUTPUT = 1e3  # a model whose torch output is larger than this is resampled: not a sane network
FP32_TOLERANCE = 1e-3  # max abs error <= this * max(1, max |torch|)
INT8_COSINE = 0.95

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


# ---------------------------------------------------------------- the independent check

@dataclass(frozen=True)
class Outcome:
    outcome: str  # one of OUTCOMES
    reason: str = ""
    check: dict[str, Any] = field(default_factory=dict)  # the independent check's numbers, when it ran


def independent_check(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], precision: str
                      ) -> tuple[str | None, dict[str, Any]]:
    """What is wrong with ``actual`` against torch's ``expected`` by a plain criterion that shares nothing with
    edgekit's gates (fp32: max abs error <= 1e-3 * max(1, max |torch|); int8: cosine >= 0.95; never NaN / Inf),
    or None; and the numbers it looked at."""
    problems, stats = [], {}
    for (name, ref), got in zip(expected.items(), actual.values()):
        got = np.asarray(got)
        if got.shape != ref.shape:
            problems.append(f"{name}: shape {got.shape}, torch {ref.shape}")
            continue
        nonfinite = int((~np.isfinite(got)).sum())
        ref64, got64 = ref.astype(np.float64).ravel(), np.nan_to_num(got.astype(np.float64).ravel())
        max_abs = float(np.abs(ref64 - got64).max(initial=0.0))
        norms = np.linalg.norm(ref64) * np.linalg.norm(got64)
        cosine = float(ref64 @ got64 / norms) if norms > 0 else float(np.array_equal(ref64, got64))
        tolerance = FP32_TOLERANCE * max(1.0, float(np.abs(ref64).max(initial=0.0)))
        stats[name] = {"max_abs": max_abs, "tolerance": tolerance, "cosine": cosine, "nonfinite": nonfinite}
        if nonfinite:
            problems.append(f"{name}: {nonfinite} NaN/Inf values")
        elif precision.startswith("int8") and cosine < INT8_COSINE:
            problems.append(f"{name}: cosine {cosine:.4f} < {INT8_COSINE}")
        elif not precision.startswith("int8") and max_abs > tolerance:
            problems.append(f"{name}: max abs error {max_abs:.3g} > {tolerance:.3g}")
    if len(actual) != len(expected):
        problems.append(f"{len(actual)} outputs, torch has {len(expected)}")
    return ("; ".join(problems) or None), stats


def classify(row, expected: dict[str, np.ndarray] | None, actual: dict[str, np.ndarray] | None,
             precision: str, check_error: str = "") -> Outcome:
    """One target's outcome from edgekit's row (an edgekit.results.Validation) and, for a row that passed, the
    artifact's outputs on fresh inputs against torch's."""
    if row.stage is not None:
        return Outcome(row.stage.value, row.reason)
    if row.status.value == "FAIL":  # a gate failure without a stage is still a mismatch edgekit caught
        return Outcome("MISMATCH", row.reason)
    if check_error:
        return Outcome("SILENT", f"passed its gates, but fresh inputs do not run: {check_error}")
    problem, stats = independent_check(expected, actual, precision)
    if problem:
        return Outcome("SILENT", f"passed its gates ({row.status.value}), but on fresh inputs {problem}", stats)
    return Outcome(row.status.value, row.reason, stats)


def run_artifact(folder: Path, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """The artifact in ``folder`` opened here, through its backend, on ``inputs``; and its declared precision."""
    from edgekit.artifact import read_manifest
    from edgekit.backends import get_backend
    from edgekit.backends.execute import run_batched

    manifest = read_manifest(folder / "manifest.json")
    session = get_backend(manifest.backend).open(folder, manifest)
    return run_batched(session, manifest, inputs), manifest.precision.declared


def judge(row, folder: Path, fresh: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> Outcome:
    if row.stage is not None or row.status.value == "FAIL":
        return classify(row, None, None, "")
    try:
        actual, precision = run_artifact(folder, fresh)
    except Exception as exc:  # the artifact passed on edgekit's inputs; failing on ours is silent breakage
        return classify(row, None, None, "", check_error=f"{type(exc).__name__}: {exc}"[:300])
    return classify(row, expected, actual, precision)


# ---------------------------------------------------------------- one model through edgekit

def target_names(int8: bool) -> list[str]:
    """Every registered backend's fp32 profile (and int8 with ``int8``), where targets/ has one."""
    from edgekit.backends.base import registered

    precisions = ("fp32", "int8") if int8 else ("fp32",)
    return [f"{b}-cpu-{p}" for p in precisions for b in registered()
            if (ROOT / "targets" / f"{b}-cpu-{p}.toml").is_file()]


MODEL_FILE_HEAD = '''"""Generated by tools/fuzz.py: model_I() rebuilds fuzz model I of seed {seed}, as a user's factory
would."""
import importlib.util
import sys

_NAME = "edgekit_fuzz_builder"
if _NAME not in sys.modules:  # registered before it runs: dataclasses look their module up there
    _spec = importlib.util.spec_from_file_location(_NAME, {builder!r})
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
_builder = sys.modules[_NAME]
'''


def write_model_file(path: Path, seed: int, models: int) -> Path:
    factories = "".join(f"\n\ndef model_{i}():\n    return _builder.factory({seed}, {i})\n" for i in range(models))
    path.write_text(MODEL_FILE_HEAD.format(seed=seed, builder=str(Path(__file__).resolve())) + factories)
    return path


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def fuzz_model(seed: int, index: int, out: Path, model_file: Path, targets: list[str], keep: bool) -> dict:
    """Model ``index`` exported to every target, each target's outcome; its run folder deleted unless ``keep``."""
    from edgekit.api import export
    from edgekit.config import load_profile
    from edgekit.errors import one_line

    start = time.time()
    built = build(seed, index)
    def stream(tag):
        return np.random.default_rng([seed, index, built.attempt, tag])
    work = out / "work" / f"model_{index}"
    data = _write_npz(work / "val.npz", random_inputs(built.inputs, VALIDATION_SAMPLES, stream(VALIDATION)))
    calib = None
    if any(t.endswith("int8") for t in targets):
        calib = _write_npz(work / "calib.npz", random_inputs(built.inputs, CALIBRATION_SAMPLES, stream(CALIBRATION)))
    fresh = random_inputs(built.inputs, FRESH_SAMPLES, stream(FRESH))
    expected = torch_outputs(built.module, fresh)
    run = work / "run"
    outcomes: dict[str, Outcome] = {}
    try:
        result = export(f"{model_file}:model_{index}", [load_profile(str(ROOT / "targets" / f"{t}.toml"))
                                                         for t in targets], run, calib=calib, data=data)
        for row in result.rows:
            outcomes[row.target] = judge(row, run / row.target, fresh, expected)
    except Exception as exc:  # export() itself raised: no target got a row, each one is a crash of edgekit
        outcomes = {t: Outcome("CRASH", f"export() raised {one_line(exc)}") for t in targets}
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return {"index": index, "source": f"{model_file}:model_{index}", **built.summary(),
            "seconds": round(time.time() - start, 2),
            "targets": {t: {"outcome": o.outcome, "reason": o.reason, "check": o.check} for t, o in outcomes.items()}}


def _progress_line(record: dict) -> str:
    names = [b["block"] for b in record["blocks"]]
    outcomes = " ".join(f"{t.replace('-cpu-', '/')}={o['outcome']}" for t, o in record["targets"].items())
    return f"model {record['index']:3d} {record['seconds']:6.1f}s  {'>'.join(names)}  {outcomes}"


# ---------------------------------------------------------------- the whole run

def counts(records: list[dict], targets: list[str]) -> dict[str, dict[str, int]]:
    table = {t: dict.fromkeys(OUTCOMES, 0) for t in targets}
    for record in records:
        for target, outcome in record["targets"].items():
            table.setdefault(target, dict.fromkeys(OUTCOMES, 0))[outcome["outcome"]] += 1
    return table


def markdown_table(table: dict[str, dict[str, int]]) -> str:
    total = {o: sum(row[o] for row in table.values()) for o in OUTCOMES}
    lines = ["| target | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|"]
    for name, row in [*table.items(), ("**total**", total)]:
        lines.append(f"| {name} | " + " | ".join(str(row[o]) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def _one_model(args: argparse.Namespace, argv: list[str], index: int, out: Path, targets: list[str]) -> dict:
    """Model ``index`` in a process of its own (``--one``), so a converter that hangs costs one model: past
    ``--model-timeout`` seconds its process group is killed and every target is a TIMEOUT."""
    import os
    import signal

    record_file = out / "records" / f"model_{index}.json"
    record_file.unlink(missing_ok=True)
    start = time.time()
    child = subprocess.Popen([sys.executable, __file__, *argv, "--one", str(index)], start_new_session=True)
    try:
        child.wait(timeout=args.model_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    if record_file.is_file():
        return json.loads(record_file.read_text())
    built = build(args.seed, index)
    why = f"the model's export took more than {args.model_timeout:g} s" if child.returncode == -signal.SIGKILL \
        else f"the model's process ended with {child.returncode} before writing its record"
    outcome = "TIMEOUT" if child.returncode == -signal.SIGKILL else "CRASH"
    return {"index": index, "source": f"model_{index}", **built.summary(), "seconds": round(time.time() - start, 2),
            "targets": {t: {"outcome": outcome, "reason": why, "check": {}} for t in targets}}


def _run_shard(args: argparse.Namespace, argv: list[str], out: Path, targets: list[str],
               partial: Path | None = None) -> list[dict]:
    """Every jobs-th model from ``shard``, each in its own process; ``partial`` is rewritten after each model, so
    a long run that is stopped still has its records."""
    records = []
    for index in range(args.shard, args.models, args.jobs):
        records.append(_one_model(args, argv, index, out, targets))
        print(_progress_line(records[-1]), flush=True)
        if partial is not None:
            partial.write_text(json.dumps(records))
    return records


def _run_parallel(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """``--jobs`` child processes of this script, each on every jobs-th model; their records merged in order."""
    children = [subprocess.Popen([sys.executable, __file__, *argv, "--shard", str(k)]) for k in range(args.jobs)]
    if any(child.wait() != 0 for child in children):
        raise RuntimeError("a fuzz shard failed (see its output above)")
    records = []
    for k in range(args.jobs):
        shard = Path(args.out) / f"shard_{k}.json"
        records += json.loads(shard.read_text()) if shard.is_file() else []  # no file: fewer models than jobs
    return sorted(records, key=lambda r: r["index"])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/fuzz.py", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for the model file, fuzz.json and (with --keep) runs")
    parser.add_argument("--int8", action="store_true", help="also every backend's cpu-int8 profile")
    parser.add_argument("--keep", action="store_true", help="keep each model's run folder")
    parser.add_argument("--jobs", type=int, default=1, help="models exported in parallel processes")
    parser.add_argument("--model-timeout", type=float, default=900.0,
                        help="seconds one model may take (all its targets) before it is killed and its targets "
                             "are TIMEOUT")
    parser.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)  # set for --jobs children
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # one model, in its own process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; 1 if any target is a silent mismatch, else 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_file = out / "fuzz_models.py"
    targets = target_names(args.int8)
    if args.one is not None:  # one model's process: its record, written for the shard to read
        record = fuzz_model(args.seed, args.one, out, model_file, targets, args.keep)
        (out / "records").mkdir(exist_ok=True)
        path = out / "records" / f"model_{args.one}.json"
        path.with_suffix(".tmp").write_text(json.dumps(record))
        path.with_suffix(".tmp").replace(path)
        return 0
    child_argv = [a for i, a in enumerate(argv) if a != "--shard" and (i == 0 or argv[i - 1] != "--shard")]
    if args.shard is not None:  # a --jobs child: its share of the models, for the parent to merge
        _run_shard(args, child_argv, out, targets, out / f"shard_{args.shard}.json")
        return 0
    write_model_file(model_file, args.seed, args.models)
    for stale in [*out.glob("shard_*.json"), *out.glob("records/model_*.json")]:  # an earlier run's
        stale.unlink()
    (out / "records").mkdir(exist_ok=True)
    start = time.time()
    if args.jobs > 1:
        records = _run_parallel(args, argv)
    else:
        args.shard = 0
        records = _run_shard(args, child_argv, out, targets)
    table = counts(records, targets)
    silent = sum(row["SILENT"] for row in table.values())
    nonfinite = sum(c.get("nonfinite", 0) for r in records for o in r["targets"].values() for c in o["check"].values())
    seconds = time.time() - start
    report = {"seed": args.seed, "models": args.models, "int8": args.int8, "targets": targets,
              "seconds": round(seconds, 1), "counts": table, "silent": silent, "nonfinite_values": nonfinite,
              "records": records}
    (out / "fuzz.json").write_text(json.dumps(report, indent=1))
    print(f"\n{args.models} models, seed {args.seed}, {seconds:.0f} s ({seconds / max(1, args.models):.1f} s a "
          f"model); {silent} silent mismatches; {nonfinite} NaN/Inf values in passing artifacts' outputs\n")
    print(markdown_table(table))
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
