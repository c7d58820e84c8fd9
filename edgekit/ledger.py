"""The per-layer numerics ledger: every module's output in torch against the tensor its artifact computes for it
on its own runtime, on the same real inputs, for every target of a run side by side.

Torch side: a forward hook on every module of the reference model (re-loaded from the run's source) records its
output, in the order the modules finish. Runtime side: each backend's optional ``intermediates(folder, manifest,
inputs)`` returns its tensors with the module path its converter carried over, run in a worker process
(edgekit.isolation, as validation runs) so a runtime that aborts becomes a row, not a crash. A module is matched with
the last tensor, in graph order, made by it or a module inside it, of its output's shape (a 4-D tensor in NHWC is
transposed back). The first diverging layer is the first in torch's order whose SQNR is below the per-layer gate
of the target's precision; the layers that contribute most are those that add the most noise-to-signal power over
the matched layer before them."""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fsutil import write_json, write_text
from edgekit.reference import load_run_reference
from edgekit.validate.metrics import SQNR_CAP_DB, output_stats

# per-layer SQNR gates (dB) by the precision the target declares: below it, a layer diverges
LAYER_GATES_DB = {"fp32": 80.0, "fp16": 45.0, "bf16": 30.0, "int8": 30.0, "int8-dynamic": 30.0}
DEFAULT_SAMPLES = 8
# above this, two float32 computations differ by rounding only (identical ones give the 300 dB cap): noise growth
# is counted from here up
FLOAT32_FLOOR_DB = 120.0
CONTRIBUTORS = 3  # how many of the layers that add the most noise a target lists
LEDGER_JSON = "ledger.json"
LEDGER_MD = "ledger.md"
ROOT = "(model)"  # how the root module's row is shown


@dataclass(frozen=True)
class LayerStats:
    tensor: str  # the runtime tensor compared
    sqnr_db: float
    cosine: float
    max_abs_error: float
    note: str = ""  # e.g. "transposed from NHWC", "a ReLU is fused into this tensor"


@dataclass(frozen=True)
class TargetLedger:
    target: str
    backend: str
    precision: str
    gate_db: float
    status: str  # "ok", "not supported by this backend", or the stage and reason it failed
    layers: dict[str, LayerStats] = field(default_factory=dict)  # module path -> its comparison
    unmatched: dict[str, str] = field(default_factory=dict)  # module path -> why no tensor was compared
    first_divergence: str | None = None
    contributors: tuple[tuple[str, float], ...] = ()  # (module path, noise-to-signal power it adds), largest first
    unmapped_tensors: int = 0  # runtime tensors whose module the converter did not record


@dataclass(frozen=True)
class Ledger:
    source: str
    samples: int
    modules: tuple[tuple[str, str, tuple[int, ...]], ...]  # (path, class, output shape) in execution order
    targets: tuple[TargetLedger, ...]


# --- torch side -------------------------------------------------------------------------------------------

def torch_layers(module, inputs: dict[str, np.ndarray], names: tuple[str, ...]
                 ) -> list[tuple[str, str, np.ndarray]]:
    """(module path, class name, output) of every module ("" the root) in the order they finish, on ``inputs``;
    a module called more than once keeps its last call, one returning several tensors its first float one."""
    import torch

    found: dict[str, tuple[str, np.ndarray]] = {}

    def first_float(out):
        if isinstance(out, torch.Tensor):
            return out if out.is_floating_point() else None
        if isinstance(out, (tuple, list)):
            return next((t for t in map(first_float, out) if t is not None), None)
        if isinstance(out, dict):
            return next((t for t in map(first_float, out.values()) if t is not None), None)
        return None

    def hook(path: str):
        def record(mod, args, out) -> None:
            tensor = first_float(out)
            if tensor is not None:
                found.pop(path, None)  # re-inserted: the order is that of the last call
                found[path] = (type(mod).__name__, tensor.detach().numpy().copy())
        return record

    handles = [m.register_forward_hook(hook(path)) for path, m in module.named_modules()]
    try:
        with torch.no_grad():
            module(*[torch.from_numpy(inputs[k]) for k in names])
    finally:
        for h in handles:
            h.remove()
    return [(path, cls, value) for path, (cls, value) in found.items()]


# --- runtime side, in a worker process --------------------------------------------------------------------

def run_intermediates(folder: Path, inputs: dict[str, np.ndarray], timeout: float = 600.0, memory_mb: int = 0
                      ) -> list[tuple[str, str | None, np.ndarray]]:
    """(tensor name, module path or None, array) of one artifact on ``inputs`` (its own layout), in graph order,
    from a worker process (edgekit.isolation, as validation runs); a crash, a hang or a failure raises
    EdgekitError naming the stage."""
    from edgekit.isolation.process import run_worker
    from edgekit.isolation.worker import TENSORS_FILE, Job

    with tempfile.TemporaryDirectory(prefix="edgekit-ledger-") as scratch:
        out = Path(scratch)
        np.savez(out / "inputs.npz", **inputs)
        job = Job("intermediates", str(folder.parent.resolve()), folder.name, scratch, measure=False,
                  inputs=str(out / "inputs.npz"), memory_mb=memory_mb)
        outcome = run_worker(job, timeout)
        if outcome.stage is not None:
            raise EdgekitError(f"{outcome.stage.value}: {outcome.reason}")
        names = json.loads((out / TENSORS_FILE).read_text(encoding="utf-8"))
    return [(name, path, outcome.outputs[f"tensor:{i}"]) for i, (name, path) in enumerate(names)]


# --- matching and metrics ---------------------------------------------------------------------------------

def _inside(path: str | None, module: str) -> bool:
    return path is not None and (module == "" or path == module or path.startswith(module + "."))


def _as_torch_layout(value: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    if value.shape == shape:
        return value, ""
    if value.ndim == 4 and value.transpose(0, 3, 1, 2).shape == shape:
        return value.transpose(0, 3, 1, 2), "transposed from NHWC"
    return None, ""


def compare_layer(reference: np.ndarray, tensors: list[tuple[str, str | None, np.ndarray]], module: str
                  ) -> tuple[LayerStats | None, str]:
    """The module's output against the last tensor (graph order) made inside it with its shape; or why none."""
    inside = [t for t in tensors if _inside(t[1], module)]
    if not inside:
        return None, "no runtime tensor carries this module"
    for name, _, value in reversed(inside):
        actual, note = _as_torch_layout(value, reference.shape)
        if actual is None:
            continue
        if actual.min(initial=0) >= 0 > reference.min(initial=0):
            fused = output_stats(name, np.maximum(reference, 0), actual)
            if fused.sqnr_db > output_stats(name, reference, actual).sqnr_db:  # the converter fused a ReLU
                reference, note = np.maximum(reference, 0), ", ".join(filter(None, (note, "ReLU fused into it")))
        stats = output_stats(name, reference, actual)
        return LayerStats(name, round(stats.sqnr_db, 2), stats.cosine, stats.max_abs_error, note), ""
    shapes = sorted({"x".join(map(str, t[2].shape)) for t in inside})
    return None, f"no tensor of its output shape (the converter fused it; tensors: {', '.join(shapes[:4])})"


def affine_fit_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """SQNR (dB) of ``actual`` against the best per-channel (axis 1) affine map of ``reference``: high when the
    runtime's tensor is the module's output scaled and shifted per channel, as a batch norm folded into it makes."""
    channels = reference.shape[1] if reference.ndim >= 2 else 1
    x = np.moveaxis(reference.astype(np.float64).reshape(reference.shape[0], channels, -1), 1, 0).reshape(channels, -1)
    y = np.moveaxis(actual.astype(np.float64).reshape(actual.shape[0], channels, -1), 1, 0).reshape(channels, -1)
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    slope = (xc * yc).sum(1) / np.maximum((xc * xc).sum(1), 1e-300)
    noise = float(((yc - slope[:, None] * xc) ** 2).sum())
    signal = float((y * y).sum())
    return SQNR_CAP_DB if noise == 0 else min(SQNR_CAP_DB, 10 * np.log10(max(signal, 1e-300) / noise))


# a module whose runtime tensor fits a per-channel affine map of its output this much better than the output itself
# holds a batch norm folded in (OpenVINO names a convolution with the following norm folded into its weights after
# the convolution: MobileNetV2's fp32 IR compared at 1.8 dB there, 141.8 dB at the norm)
FOLDED_GAIN_DB = 10.0


def compare_layers(layers: list[tuple[str, str, np.ndarray]], tensors: list[tuple[str, str | None, np.ndarray]]
                   ) -> tuple[dict[str, LayerStats], dict[str, str]]:
    """Every torch layer against its runtime tensor: (module path -> stats, module path -> why unmatched). A layer
    followed by a batch norm whose tensor holds the norm half folded in (scaled, not yet shifted) is not compared:
    its error would be the fold's, not the runtime's; the norm's own output is."""
    compared, unmatched = {}, {}
    for i, (path, _, reference) in enumerate(layers):
        stats, why = compare_layer(reference, tensors, path)
        following = layers[i + 1] if i + 1 < len(layers) else None
        if stats is not None and following is not None and "BatchNorm" in following[1] and \
                following[2].shape == reference.shape:
            actual = next(_as_torch_layout(v, reference.shape)[0] for n, _, v in tensors if n == stats.tensor)
            if affine_fit_db(reference, actual) > stats.sqnr_db + FOLDED_GAIN_DB:
                stats, why = None, f"its tensor holds {following[0]} folded into it (compared there)"
        if stats is None:
            unmatched[path] = why
        else:
            compared[path] = stats
    return compared, unmatched


def sqnr_drops(order: list[str], layers: dict[str, LayerStats]) -> list[tuple[str, float]]:
    """(module path, dB lost from the matched layer before it) for every matched layer, in ``order``; the first
    matched layer drops from the inputs, which are exact."""
    matched = [p for p in order if p in layers]
    level = {None: FLOAT32_FLOOR_DB, **{p: min(layers[p].sqnr_db, FLOAT32_FLOOR_DB) for p in matched}}
    return [(p, round(level[q] - level[p], 2)) for q, p in zip([None, *matched], matched)]


def noise_growth(order: list[str], layers: dict[str, LayerStats]) -> list[tuple[str, float]]:
    """(module path, the noise-to-signal power it adds over the matched layer before it) for every matched layer,
    in ``order``. Unlike a dB drop, which makes the first int8 layer after float ones look the worst (120 dB down
    to 35 dB is a large drop of a noise that is still 3e-4 of the signal), this is what the layer adds to the noise
    that reaches the outputs where the layers after it carry noise and signal alike. Where they amplify the noise
    (EfficientNet-Lite0's high-pass depthwise kernels), the growth shows later than its cause."""
    matched = [p for p in order if p in layers]
    ratio = {None: 10 ** (-FLOAT32_FLOOR_DB / 10),
             **{p: 10 ** (-min(layers[p].sqnr_db, FLOAT32_FLOOR_DB) / 10) for p in matched}}
    return [(p, ratio[p] - ratio[q]) for q, p in zip([None, *matched], matched)]


def divergence(order: list[str], layers: dict[str, LayerStats], gate_db: float
               ) -> tuple[str | None, tuple[tuple[str, float], ...]]:
    """The first layer (in ``order``) below the gate, and the layers that add the most noise over the matched layer
    before them."""
    first = next((p for p in order if p in layers and layers[p].sqnr_db < gate_db), None)
    top = sorted(((p, float(f"{g:.4g}")) for p, g in noise_growth(order, layers) if g > 0),
                 key=lambda d: -d[1])[:CONTRIBUTORS]
    return first, tuple(top)


def target_ledger(run, name: str, layers: list[tuple[str, str, np.ndarray]], inputs: dict[str, np.ndarray],
                  timeout: float | None) -> TargetLedger:
    from edgekit.artifact import read_manifest
    from edgekit.backends import get_backend
    from edgekit.backends.execute import to_artifact_layout

    profile = run.profile(name)
    gate = LAYER_GATES_DB.get(profile.precision, LAYER_GATES_DB["fp32"])
    base = {"target": name, "backend": profile.backend, "precision": profile.precision, "gate_db": gate}
    if not run.has_manifest(name):
        return TargetLedger(**base, status=f"no artifact ({run.earlier_failure(name, profile).reason})")
    folder = run.target(name)
    manifest = read_manifest(folder / "manifest.json")
    try:
        backend = get_backend(manifest.backend)
    except EdgekitError as exc:
        return TargetLedger(**base, status=str(exc))
    if not hasattr(backend, "intermediates"):
        return TargetLedger(**base, status="not supported by this backend")
    try:
        tensors = run_intermediates(folder, to_artifact_layout(inputs, manifest),
                                    profile.limits.ledger if timeout is None else timeout, profile.limits.memory_mb)
    except EdgekitError as exc:
        return TargetLedger(**base, status=str(exc))
    compared, unmatched = compare_layers(layers, tensors)
    first, top = divergence([p for p, _, _ in layers], compared, gate)
    return TargetLedger(**base, status="ok", layers=compared, unmatched=unmatched, first_divergence=first,
                        contributors=top, unmapped_tensors=sum(t[1] is None for t in tensors))


def ledger(run_dir: str | Path, samples: int = DEFAULT_SAMPLES, allow_pickle: bool = False,
           timeout: float | None = None, progress: Callable[[str], None] = lambda _: None) -> Ledger:
    """The ledger of every target of a run on the first ``samples`` reference inputs; written into the run
    folder as ledger.json and ledger.md."""
    from edgekit.runfolder import RunFolder
    from edgekit.source import load_recorded

    if samples < 1:
        raise EdgekitError("--samples must be at least 1")
    run = RunFolder(run_dir)
    record = run.record()
    reference = load_run_reference(run, record)
    inputs = {k: v[:samples] for k, v in reference.inputs.items()}
    if run.compression() is not None:
        raise EdgekitError(f"{run.path}: a compressed run; its torch reference is the compressed model, which the "
                           "run folder does not keep: the ledger cannot rebuild it yet")
    progress(f"loading {record.source}")
    spec = load_recorded(record, allow_pickle=allow_pickle)
    layers = torch_layers(spec.module.eval(), inputs, tuple(record.inputs))
    targets = []
    for name in record.targets:
        progress(f"{name}: intermediates")
        targets.append(target_ledger(run, name, layers, inputs, timeout))
    result = Ledger(record.source, len(next(iter(inputs.values()))),
                    tuple((p, cls, tuple(v.shape[1:])) for p, cls, v in layers), tuple(targets))
    write_json(run.path / LEDGER_JSON, result)
    write_text(run.path / LEDGER_MD, markdown(result))
    return result


# --- presentation -----------------------------------------------------------------------------------------

def table(result: Ledger) -> list[list[str]]:
    """Rows: module paths in execution order; a column of SQNR dB per target ("-": not matched; "!": below the
    per-layer gate)."""
    rows = [["module", "type", *(t.target for t in result.targets)]]
    for path, cls, _ in result.modules:
        cells = []
        for t in result.targets:
            stats = t.layers.get(path)
            cells.append("n/a" if t.status != "ok" else "-" if stats is None else
                         f"{stats.sqnr_db:.1f}" + (" !" if stats.sqnr_db < t.gate_db else ""))
        rows.append([path or ROOT, cls, *cells])
    return rows


def summary_lines(result: Ledger) -> list[str]:
    lines = []
    for t in result.targets:
        if t.status != "ok":
            lines.append(f"{t.target}: {t.status}")
            continue
        first = t.first_divergence
        top = ", ".join(f"{p or ROOT} (+{g:.3g})" for p, g in t.contributors) or "none"
        lines.append(f"{t.target}: first diverging layer "
                     + (f"{first or ROOT} ({t.layers[first].sqnr_db:.1f} dB < {t.gate_db:g} dB)" if first is not None
                        else f"none (every matched layer >= {t.gate_db:g} dB)")
                     + f"; {len(t.layers)} matched, {len(t.unmatched)} unmatched"
                     + (f" ({', '.join(p or ROOT for p in t.unmatched)})" if t.unmatched else "")
                     + f"; most noise added (noise-to-signal power): {top}")
    return lines


def markdown(result: Ledger) -> str:
    from edgekit.report import markdown_table

    parts = [f"# Per-layer ledger: {result.source}", "",
             (f"SQNR (dB) of each module's output on the target's runtime against torch, on {result.samples} "
              "reference inputs; `-` no runtime tensor matched, `!` below the per-layer gate."), "",
             markdown_table(table(result)), "", *[f"- {line}" for line in summary_lines(result)], ""]
    for t in result.targets:
        if t.unmatched:
            parts += [f"## {t.target}: unmatched layers", "",
                      *[f"- `{p or ROOT}`: {why}" for p, why in t.unmatched.items()], ""]
    return "\n".join(parts)
