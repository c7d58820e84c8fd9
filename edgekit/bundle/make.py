"""``edgekit bundle RUN_DIR --target PROFILE --out DIR``: what goes onto the device. A self-contained folder with
the model file(s), a manifest (tensors, layout, preprocessing, labels, precision, quantization, gates, hashes),
golden inputs with the original's outputs, the runner (numpy + one runtime), integration examples, and optionally
the model as a C array."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edgekit._version import __version__
from edgekit.artifact import Manifest, asset_entries, file_entry, read_manifest, verify_files
from edgekit.backends import get_backend
from edgekit.backends.execute import SESSION_FILE
from edgekit.config import HIGHER_IS_BETTER, TargetProfile
from edgekit.errors import EdgekitError
from edgekit.fsutil import jsonable, staged_folder
from edgekit.reference import load_run_reference
from edgekit.runfolder import MANIFEST_FILE, RunFolder, RunRecord

BUNDLE_SCHEMA = "edgekit.bundle/1"
BUNDLE_MARKER = "manifest.json"
GOLDEN_SAMPLES = 16
HERE = Path(__file__).parent
# files the runner needs beside it: standalone modules of edgekit (numpy, pillow, the one runtime), copied byte for
# byte so that the device runs exactly the code that validation ran, without edgekit; edgekit_execute.py is the one
# artifact runner, edgekit_cpu.py what "0 threads" means and the CPU's flags, for it and the session module
HELPERS = {"edgekit_timing.py": HERE.parent / "bench" / "timing.py",
           "edgekit_metrics.py": HERE.parent / "validate" / "metrics.py",
           "edgekit_execute.py": HERE.parent / "backends" / "execute.py",
           "edgekit_cpu.py": HERE.parent / "cpu.py",
           "edgekit_pixels.py": HERE.parent / "data" / "pixels.py"}


def copied_sources(backend) -> dict[str, Path]:
    """Every file of a bundle that is a copy of one of edgekit's (bundle name -> source): the runner, its helpers,
    the backend's session module, the integration example."""
    return {"run.py": HERE / "runner.py", **HELPERS, SESSION_FILE: backend.session_module,
            "example.py": HERE / "example.py"}


def _runtime(manifest: Manifest, backend) -> dict:
    """How to open the model (the manifest's runtime options, read by edgekit_session.py) and what to install."""
    packages = (getattr(backend, "runtime_package", backend.name), *getattr(backend, "runtime_requires", ()))
    pinned = [f"{p}=={manifest.versions[p]}" if p in manifest.versions else p for p in packages]
    return {**manifest.extra["runtime"], "package": " ".join(pinned)}


def _gates(profile: TargetProfile) -> dict:
    return {name: {metric: {"warn": t.warn, "fail": t.fail} for metric, t in gates.items()}
            for name, gates in profile.gates.outputs.items()}


def _preprocess(record: RunRecord, layout: str) -> dict | None:
    """The model's preprocessing as the run recorded it (None: the model declares none; feed .npy arrays)."""
    p = record.preprocess
    if p is None:
        return None
    return {**p, "channel_order": "L" if p["grayscale"] else "RGB", "layout_of_arrays": "NCHW",
            "model_layout": layout,
            "formula": "x = (pixel * scale - mean) / std, per channel (after the resize or the centre crop); "
                       "the runner transposes to the model layout"}


def _write_golden(run: RunFolder, folder: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> int:
    reference = load_run_reference(run)
    arrays = {f"input:{k}": reference.inputs[k][:GOLDEN_SAMPLES] for k in inputs}
    arrays.update({f"output:{k}": reference.outputs[k][:GOLDEN_SAMPLES] for k in outputs})
    np.savez_compressed(folder / "golden.npz", **arrays)
    return len(next(iter(arrays.values())))


def _artifact(run: RunFolder, target: str) -> tuple[RunRecord, Path, Manifest]:
    """The run's record, and the folder and the verified manifest of ``target``'s artifact."""
    record = run.record()
    if target not in record.targets:
        raise EdgekitError(f"{run.path} has no target {target!r}; it has {', '.join(record.targets)}")
    source = run.target(target)
    if not run.has_manifest(target):
        raise EdgekitError(f"{target} has no artifact in {run.path} (its export failed); see its validation.json")
    manifest = read_manifest(source / MANIFEST_FILE)
    verify_files(source, manifest)
    return record, source, manifest


def _copy_files(stage: Path, source: Path, manifest: Manifest, backend) -> None:
    """The model file(s) and their assets, the runner with its helpers and the backend's session module, the
    integration example."""
    for entry in (*manifest.files, *asset_entries(manifest)):
        (stage / entry.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / entry.path, stage / entry.path)
    for name, path in copied_sources(backend).items():
        shutil.copy2(path, stage / name)


def _write_c_arrays(stage: Path, manifest: Manifest) -> list[Path]:
    """The model file(s) as C arrays in c/, and a C program that checks them against the files."""
    from edgekit.bundle.c_array import (
        symbol_for,
        write_c_array,
        write_check_program,
    )

    (stage / "c").mkdir(exist_ok=True)
    written, embedded = [], []
    for entry in manifest.files:  # OpenVINO needs both its .xml and its .bin
        header, src = write_c_array(stage / entry.path, stage / "c")
        embedded.append((entry.path, header, symbol_for(entry.path)))
        written += [header, src]
    written.append(write_check_program(stage / "c", embedded))
    return written


def _document(stage: Path, record: RunRecord, target: str, manifest: Manifest, profile: TargetProfile, backend,
              samples: int, extra: list[Path]) -> dict:
    """The bundle's manifest.json: what the device needs to know to run the model and check it."""
    assets = asset_entries(manifest)
    hashed = [stage / e.path for e in manifest.files] + [stage / "golden.npz", stage / "run.py",
                                                         *(stage / n for n in HELPERS), stage / SESSION_FILE,
                                                         stage / "example.py",
                                                         *(stage / e.path for e in assets), *extra]
    return {
        "schema": BUNDLE_SCHEMA, "edgekit": __version__, "source": record.source, "target": target,
        "backend": manifest.backend, "model_file": manifest.model_file, "layout": manifest.layout,
        "batch_sizes": list(manifest.batch_sizes) if manifest.batch_sizes else None,
        "inputs": jsonable(manifest.inputs), "outputs": jsonable(manifest.outputs),
        "precision": jsonable(manifest.precision), "quantization": manifest.extra.get("quantization"),
        "io": "float32 (or the integer token ids) in and out; quantized models quantize inside the graph",
        "preprocess": _preprocess(record, manifest.layout), "labels": list(record.labels),
        "attention_outputs": list(record.attention_outputs), "assets": [e.path for e in assets],
        "dynamic_axes": manifest.extra.get("dynamic_axes"), "lengths": manifest.extra.get("lengths"),
        "gates": _gates(profile), "higher_is_better": sorted(HIGHER_IS_BETTER),
        "runtime": _runtime(manifest, backend), "versions": manifest.versions,
        "golden": {"file": "golden.npz", "samples": samples, "of": "the run's reference data (val split)"},
        "files": [jsonable(file_entry(stage, str(p.relative_to(stage)))) for p in hashed],
    }


def bundle(run_dir: str | Path, target: str, out: str | Path, *, c_array: bool = False) -> Path:
    """Write the bundle of one target of a run; the folder appears only when complete."""
    run = RunFolder(run_dir)
    record, source, manifest = _artifact(run, target)
    profile = run.profile(target)
    backend = get_backend(manifest.backend)
    with staged_folder(Path(out), marker=BUNDLE_MARKER) as stage:
        _copy_files(stage, source, manifest, backend)
        samples = _write_golden(run, stage, tuple(s.name for s in manifest.inputs),
                                tuple(s.name for s in manifest.outputs))
        (stage / "profile.toml").write_text(profile.text, encoding="utf-8")
        # a backend may add its own integration files (OpenVINO: a C example that applies the same options)
        extra: list[Path] = list(getattr(backend, "bundle_files", lambda *_: [])(stage, manifest))
        if c_array:
            extra += _write_c_arrays(stage, manifest)
        document = _document(stage, record, target, manifest, profile, backend, samples, extra)
        (stage / BUNDLE_MARKER).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return Path(out)
