"""The Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edgekit.artifact import Manifest, add_assets, read_manifest, verify_files
from edgekit.backends import get_backend
from edgekit.backends.base import check_options
from edgekit.check import check_model
from edgekit.compress.recipe import CompressionRecipe, compress
from edgekit.config import TargetProfile, load_profiles, with_limits
from edgekit.data.calib import CalibrationData, load_calibration
from edgekit.data.sources import InputInfo, load_data
from edgekit.errors import EdgekitError
from edgekit.findings import CheckResult
from edgekit.fsutil import folder_lock, full_disk, jsonable, staged_folder, stale_stages, write_json, write_text
from edgekit.isolation.validate import validate_in_worker
from edgekit.lengths import length_dims, lengths_record, own_length
from edgekit.quantize import quantize_target
from edgekit.reference import Reference, build_reference, load_run_reference, save_reference
from edgekit.report.render import write_bench_reports
from edgekit.results import BenchResult, BenchRow, RunResult, StageFailed, Validation, failure
from edgekit.runfolder import (
    COMPRESSION_FILE,
    MANIFEST_FILE,
    PROFILE_FILE,
    REFERENCE_FILE,
    VALIDATION_FILE,
    RunFolder,
    RunRecord,
)
from edgekit.source import load_source
from edgekit.spec import ModelSpec

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _keep_diagnostics(folder: Path) -> None:
    """A target that failed before its artifact was complete keeps its profile (and, written next, its
    validation.json) only: half-written model files can be gigabytes and are no result."""
    for item in folder.iterdir():
        if item.name != PROFILE_FILE:
            shutil.rmtree(item) if item.is_dir() else item.unlink()


def export_target(reference: Reference, profile: TargetProfile, folder: Path, calib: CalibrationData | None,
                  progress: Progress) -> Validation:
    """One target: its artifact made (:func:`edgekit.quantize.quantize_target`), described and validated."""
    folder.mkdir()
    write_text(folder / PROFILE_FILE, profile.text)
    try:
        manifest = quantize_target(reference.spec, reference.source, profile, folder, calib, progress, isolated=True)
    except StageFailed as exc:
        _keep_diagnostics(folder)
        return failure(profile, exc.stage, exc.reason)
    spec = reference.spec
    manifest = replace(manifest, inputs=length_dims(manifest.inputs, spec),
                       extra={**manifest.extra, **lengths_record(spec, manifest),
                              "preprocess": None if spec.preprocess is None else jsonable(spec.preprocess)})
    manifest = add_assets(folder, manifest, spec.assets)
    write_text(folder / MANIFEST_FILE, manifest.to_json())
    progress(f"{profile.name}: validating on {len(next(iter(reference.inputs.values())))} samples")
    return validate_in_worker(reference, folder.parent, folder.name, manifest.precision, profile)


def _resumable(out: Path, reference: Reference) -> Path | None:
    """The newest staging folder a killed export to ``out`` left, if its reference data is this run's."""
    import numpy as np

    for stage in stale_stages(out):
        try:
            with np.load(stage / REFERENCE_FILE, allow_pickle=False) as z:
                same = all(np.array_equal(z[f"input:{k}"], v) for k, v in reference.inputs.items()) and \
                    all(np.array_equal(z[f"output:{k}"], v) for k, v in reference.outputs.items())
        except (OSError, KeyError, ValueError):
            continue
        if same:
            return stage
    return None


def _reuse(previous: Path, stage: Path, profile: TargetProfile) -> bool:
    """Move a finished target of ``previous`` into ``stage`` if it was made under the same profile text and its
    files still match their hashes; anything else is exported again."""
    old = previous / profile.name
    try:
        if (old / PROFILE_FILE).read_text(encoding="utf-8") != profile.text or not (old / VALIDATION_FILE).is_file():
            return False
        verify_files(old, read_manifest(old / MANIFEST_FILE))
    except (OSError, EdgekitError):
        return False
    shutil.move(str(old), str(stage / profile.name))
    return True


def calibration_for(spec, profiles: list[TargetProfile], calib: str | Path | None) -> dict[str, CalibrationData]:
    """Calibration data per static-int8 or mixed-precision profile, and per dynamic-int8 one when the user gave
    some (a backend may tune its dynamic quantization on it), loaded before anything is written (bad input: exit 2).
    A model with a built-in task (the zoo) calibrates on its task's calib split unless ``calib`` says otherwise."""
    info = InputInfo.of(spec)
    static = calib if calib is not None or spec.task is None else "task:calib"  # a built-in task has its own
    return {p.name: load_calibration(static, info, p.quantization.samples, p.quantization.seed,
                                     p.quantization.augment)
            for p in profiles if p.precision == "int8" or p.quantization.mixed_precision
            or p.precision == "int8-dynamic" and calib is not None}


def export(source: str, targets: str | list[TargetProfile], out: str | Path, *, calib: str | Path | None = None,
           data: str | Path | None = None, preprocess: str | None = None,
           dynamic: str | dict[str, tuple[int, ...]] | None = None, lengths: tuple[int, ...] | None = None,
           compression: CompressionRecipe | None = None, allow_pickle: bool = False, resume: bool = False,
           limits: dict[str, float] | None = None, progress: Progress = _quiet) -> RunResult:
    """Load ``source``, export it for every target, validate each against torch on real data, write a run folder.

    ``calib`` and ``data`` are DATA (see :mod:`edgekit.data.sources`) for calibration and for validation;
    ``preprocess`` (a preset or a TOML file) overrides the model's own; ``dynamic`` ("input_ids:1,..." or
    {name: axes}) and ``lengths`` its dynamic axes. The folder appears only when complete; a failing target
    becomes a row with its stage and reason. ``resume`` reuses the artifacts an interrupted export to the same
    ``out`` had finished, when their profile, files (hashes) and reference data are the same; they are validated
    again. ``limits`` overrides keys of every profile's ``[limits]`` (e.g. ``{"export": 600}``)."""
    profiles = [with_limits(p, limits) for p in
                (load_profiles(targets) if isinstance(targets, str) else list(targets))]
    for profile in profiles:
        check_options(profile)
    progress(f"loading {source}")
    spec = load_source(source, allow_pickle=allow_pickle, preprocess=preprocess,
                       dynamic=dynamic, lengths=lengths)
    calibration = calibration_for(spec, profiles, calib)
    validation = None
    if data is not None:
        validation = load_data(data, InputInfo.of(spec), "--data", max(p.validation_samples for p in profiles))
    compressed = None
    if compression is not None:
        progress(f"compressing: {compression}")
        spec, compressed = compress(spec, compression)
    reference = build_reference(spec, source, validation)
    with folder_lock(Path(out), "export"):  # another export or a bench of this --out is refused
        previous = _resumable(Path(out), reference) if resume else None
        with staged_folder(Path(out), keep=previous) as stage:
            folder = RunFolder(stage)
            save_reference(reference, folder.reference_path)
            rows = []
            for profile in profiles:
                if previous is not None and _reuse(previous, stage, profile):
                    progress(f"{profile.name}: reusing the finished artifact of the interrupted run; validating")
                    manifest = read_manifest(stage / profile.name / MANIFEST_FILE)
                    rows.append(validate_in_worker(reference, stage, profile.name, manifest.precision, profile))
                else:
                    rows.append(export_target(reference, profile, stage / profile.name,
                                               calibration.get(profile.name), progress))
                _stop_if_the_disk_is_full(stage, rows[-1])
                write_json(stage / profile.name / VALIDATION_FILE, rows[-1])
            rows = tuple(rows)
            result = RunResult(source, Path(out), reference.accuracy(), rows, compressed, reference.describe())
            if compressed is not None:
                write_json(stage / COMPRESSION_FILE, compressed)
            record = _run_record(source, spec, profiles, reference, result)
            folder.write_record(record)
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
            write_reports(stage, result, reference, record)
    return result


def _stop_if_the_disk_is_full(stage: Path, row: Validation) -> None:
    """A target that failed on a full disk is no row: the next ones would fail the same way (or hang: LiteRT's
    converter did), so the export stops here with one line; the staging folder goes with it."""
    full = full_disk(stage.parent) if row.stage is not None else None
    if full:
        raise EdgekitError(f"{full} ({row.target} failed: {row.reason})")


def _run_record(source: str, spec: ModelSpec, profiles: list[TargetProfile], reference: Reference,
                result: RunResult) -> RunRecord:
    lengths = lengths_record(spec)
    return RunRecord(
        source, tuple(spec.input_names), tuple(spec.output_names), tuple(p.name for p in profiles),
        task=spec.task, attention_outputs=tuple(spec.attention_outputs), labels=tuple(spec.labels),
        data={"origin": reference.origin, "samples": reference.samples, "real": reference.real,
              "labels": reference.labels is not None},
        preprocess=jsonable(spec.preprocess) if spec.preprocess is not None else None,
        dynamic_axes=lengths.get("dynamic_axes", {}), lengths=tuple(lengths.get("lengths", ())),
        validated_lengths=tuple(sorted({*reference.at_lengths, *own_length(reference.spec, reference.inputs)})),
        torch_accuracy=result.torch_accuracy)


def write_reports(folder: Path, result: RunResult, reference: Reference, record: RunRecord) -> None:
    """The four report files, with the validation rows (``edgekit bench`` adds speed, memory and explanations)."""
    write_bench_reports(BenchResult(result.source, folder, record.task, result.torch_accuracy, None,
                                    tuple(BenchRow(v) for v in result.rows), record.attention_outputs,
                                    reference=reference), plots=False)


def _revalidate(reference: Reference, run: RunFolder, name: str) -> Validation:
    profile = run.profile(name)
    if not run.has_manifest(name):
        return run.earlier_failure(name, profile)
    folder = run.target(name)
    manifest: Manifest = read_manifest(folder / MANIFEST_FILE)
    verify_files(folder, manifest)
    get_backend(manifest.backend)  # an unknown backend or a missing runtime is bad input (exit 2), not a row
    result = validate_in_worker(reference, run.path, name, manifest.precision, profile)
    write_json(folder / VALIDATION_FILE, result)
    return result


def validate_run(run_dir: str | Path, progress: Progress = _quiet) -> RunResult:
    """Validate every artifact of a run folder again, on its runtime, with the gates it was exported under."""
    run = RunFolder(run_dir)
    record = run.record()
    reference = load_run_reference(run, record)
    rows = []
    for name in record.targets:
        progress(f"{name}: validating")
        rows.append(_revalidate(reference, run, name))
    result = RunResult(record.source, run.path, reference.accuracy(), tuple(rows), None, reference.describe())
    write_reports(run.path, result, reference, record)
    return result


def check(source: str, targets: str | list[TargetProfile], *, allow_pickle: bool = False,
          dynamic: str | dict[str, tuple[int, ...]] | None = None, progress: Progress = _quiet
          ) -> list[CheckResult]:
    """What will not convert, or will run differently, on each target, without exporting anything: one
    :class:`~edgekit.findings.CheckResult` per target (``ok`` when it has no error; warnings allowed). Bad input
    (source, profile) raises EdgekitError, as :func:`export` does."""
    profiles = load_profiles(targets) if isinstance(targets, str) else list(targets)
    for profile in profiles:
        check_options(profile)
    progress(f"loading {source}")
    spec = load_source(source, allow_pickle=allow_pickle,
                       dynamic=dynamic)
    return check_model(spec, profiles, progress)
