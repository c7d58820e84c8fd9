"""The one artifact runner: an artifact's files checked against their hashes, the artifact opened through its
backend's session module, and the caller's NCHW/int64 arrays run through it in the artifact's layout, dtypes and
batch sizes (all samples in the chunks it takes, or one call as they come), so every backend is compared like for
like; a bundle's golden check too.

Host validation and bench (edgekit.isolation.worker), the segment chain and pipeline (edgekit.segments.worker)
and both device runners (a bundle's run.py, a segmented bundle's run.py) run artifacts through this file. Numpy
and the standard library only, no edgekit imports but the metrics the golden check computes: bundles carry it as
``edgekit_execute.py`` (beside ``edgekit_metrics.py``), byte for byte, so the device feeds a model exactly as
validation did. ``manifest`` is an edgekit Manifest or a bundle's manifest.json (a dict): both have a layout,
inputs (name, shape, dtype), batch sizes, files and runtime options."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

DYNAMIC_BATCH = 100
SESSION_FILE = "edgekit_session.py"  # a bundle's copy of its backend's session module
MANIFEST = "manifest.json"
STATUSES = ("PASS", "WARN", "FAIL")  # in order of severity


class ArtifactError(ValueError):
    """An artifact that cannot be run: a file missing, modified or outside its folder, or its runtime missing."""


def _get(manifest: Any, key: str) -> Any:
    return manifest.get(key) if isinstance(manifest, dict) else getattr(manifest, key)


def input_specs(manifest: Any) -> list[tuple[str, tuple, str]]:
    """(name, shape, dtype) of every input; a str dimension is dynamic."""
    return [(s["name"], tuple(s["shape"]), s["dtype"]) if isinstance(s, dict) else (s.name, tuple(s.shape), s.dtype)
            for s in _get(manifest, "inputs")]


def to_artifact_layout(inputs: dict[str, np.ndarray], manifest: Any) -> dict[str, np.ndarray]:
    """NCHW -> NHWC for 4-D inputs of an NHWC artifact; cast to the artifact's input dtypes (e.g. int64 -> int32)."""
    out = {}
    for name, _, dtype in input_specs(manifest):
        if name not in inputs:
            raise ValueError(f"no data for the artifact's input {name!r}")
        value = inputs[name]
        if _get(manifest, "layout") == "NHWC" and value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        out[name] = np.ascontiguousarray(value, dtype=np.dtype(dtype))
    return out


def check_shapes(inputs: dict[str, np.ndarray], manifest: Any) -> None:
    for name, shape, _ in input_specs(manifest):
        got = inputs[name].shape
        fixed = [(i, d) for i, d in enumerate(shape) if isinstance(d, int) and i > 0]
        if len(got) != len(shape) or any(got[i] != d for i, d in fixed):
            want = "x".join(str(d) for d in shape)
            raise ValueError(f"input {name!r} has shape {'x'.join(map(str, got))}, the artifact wants {want}")


def run_batched(session: Any, manifest: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All samples through the session, in chunks the artifact accepts (padding the last fixed-size chunk)."""
    feed = to_artifact_layout(inputs, manifest)
    check_shapes(feed, manifest)
    n = len(next(iter(feed.values())))
    sizes = _get(manifest, "batch_sizes")
    batch = max(sizes) if sizes else DYNAMIC_BATCH
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        part = {k: v[start:start + batch] for k, v in feed.items()}
        size = len(next(iter(part.values())))
        if sizes and size not in sizes:
            fit = min((b for b in sizes if b >= size), default=batch)
            part = {k: np.concatenate([v, np.repeat(v[-1:], fit - size, axis=0)]) for k, v in part.items()}
        for name, value in session.run(part).items():
            chunks.setdefault(name, []).append(np.asarray(value)[:size])
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def runner(session: Any, manifest: Any, batched: bool) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """The artifact as a function of the caller's arrays: ``batched`` runs all samples in the chunks it takes
    (validation, a golden check), else one call on the samples as they come (a stream of batch-1 samples)."""
    if batched:
        return lambda feed: run_batched(session, manifest, feed)
    return lambda feed: session.run(to_artifact_layout(feed, manifest))


def inside(folder: Path, relative: str, where: str) -> Path:
    """A path the manifest names, refused unless it is relative and stays inside ``folder`` (``where`` names the
    folder in the message)."""
    path = (folder / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(folder.resolve()):
        raise ArtifactError(f"{where}: the manifest names {relative!r}; paths must be relative and stay inside "
                            f"{where}")
    return path


def verify_files(folder: Path, entries: Iterable[Any], where: str) -> None:
    """Refuse files (FileEntry or a manifest.json's dicts: path, sha256, bytes) outside ``folder`` (a ``../``, an
    absolute path or a symlink out), missing, of another size than the manifest says (before a byte is read: a
    swapped-in file of any size costs nothing), or whose hash changed since they were written."""
    for entry in entries:
        relative, sha256, size = (entry["path"], entry["sha256"], entry.get("bytes")) if isinstance(entry, dict) \
            else (entry.path, entry.sha256, entry.bytes)
        path = inside(folder, relative, where)
        if not path.is_file():
            raise ArtifactError(f"{where}: {relative} is missing")
        if size is not None and path.stat().st_size != size:
            raise ArtifactError(f"{where}: {relative} is {path.stat().st_size} bytes, its manifest says {size} "
                                "(modified or corrupt)")
        if _sha256(path) != sha256:
            raise ArtifactError(f"{where}: {relative} does not match its manifest hash (modified or corrupt)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists files and shapes: anything bigger is not one


def read_bundle(folder: Path, where: str) -> dict:
    """A bundle folder's manifest.json, every file it lists checked against its hash."""
    path = folder / MANIFEST
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, over the {MAX_MANIFEST_BYTES >> 20} MB a manifest may be")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise ValueError("'files' is not a list of entries")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{where}: {MANIFEST} is not a readable bundle manifest ({exc})") from None
    verify_files(folder, files, where)
    return manifest


_SESSION_MODULES: dict[Path, ModuleType] = {}


def _session_module(path: Path) -> ModuleType:
    """A bundle's session module, imported once per file under a name of its own: the segments of a chain may
    run on different runtimes in one process, and a runtime may keep process-wide state in its module."""
    if path not in _SESSION_MODULES:
        spec = importlib.util.spec_from_file_location(f"edgekit_session_{len(_SESSION_MODULES)}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SESSION_MODULES[path] = module
    return _SESSION_MODULES[path]


def open_bundled(folder: Path, manifest: dict, threads: int | None = None, where: str = "the bundle") -> Any:
    """The model of a bundle folder on its runtime with every option its manifest records, through the session
    module beside it: the backend's own, which the host opened it with. ``threads`` None: the profile's count."""
    try:
        module = _session_module((folder / SESSION_FILE).resolve())
    except ImportError as exc:
        raise ArtifactError(f"the {manifest['backend']} runtime is not installed here ({exc.name or exc}); "
                            f"pip install {manifest['runtime']['package']}") from None
    return module.open_session(inside(folder, manifest["model_file"], where), manifest["runtime"], threads)


def golden_check(golden: dict[str, np.ndarray], actual: dict[str, np.ndarray], gates: dict,
                 higher_is_better: Iterable[str]) -> tuple[str, list[dict]]:
    """Each output against the original's under a bundle manifest's gates (output name or "*" -> metric ->
    warn, fail), as validation gated it: the worst status and a row per gated metric."""
    if __package__:  # edgekit.backends.execute
        from edgekit.validate.metrics import gate_status, output_stats
    else:  # a bundle's edgekit_execute.py, beside its copy of edgekit/validate/metrics.py
        from edgekit_metrics import gate_status, output_stats

    higher = set(higher_is_better)
    rows, status = [], "PASS"
    for name, expected in golden.items():
        stats = output_stats(name, expected, actual[name])
        for metric, threshold in {**gates.get("*", {}), **gates.get(name, {})}.items():
            value = getattr(stats, metric, None)
            if value is None:
                continue
            result = gate_status(value, threshold["warn"], threshold["fail"], metric in higher)
            status = max(status, result, key=STATUSES.index)
            rows.append({"output": name, "metric": metric, "value": value, **threshold, "status": result})
    return status, rows
