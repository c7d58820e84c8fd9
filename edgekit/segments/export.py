"""``edgekit export SRC --segments N|MODULE,... --target A,B,...``: split the model, export each segment to its
own target, validate the chained segments end to end against the original, bench them as a pipeline.

The run folder is an ordinary run of the unsplit model on the segments' targets (the pipeline's baseline;
``edgekit bench`` and ``edgekit validate`` work on it as on any run), plus ``segment0/``, ``segment1/``, ...:
each an ordinary run folder of one segment on its target, whose reference data are torch's values at its cuts,
and ``segments.json``: the cuts, the tensors crossing them, the end-to-end validation and the pipeline's numbers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.api import calibration_for, export_target, write_reports
from edgekit.artifact import Precision, read_manifest
from edgekit.backends.base import check_options
from edgekit.config import Gates, TargetProfile, load_profile
from edgekit.data.calib import CalibrationData
from edgekit.data.sources import Dataset, InputInfo, load_data
from edgekit.errors import EdgekitError
from edgekit.fsutil import jsonable, staged_folder, write_json, write_text
from edgekit.reference import Reference, build_reference, run_torch, save_reference
from edgekit.results import RunResult, Stage, Timing, Validation, failure
from edgekit.runfolder import (
    MANIFEST_FILE,
    REFERENCE_FILE,
    VALIDATION_FILE,
    RunFolder,
    RunRecord,
)
from edgekit.segments.bench import PipelineBench, measure_pipeline
from edgekit.segments.record import CutTensor, SegmentsRecord, StageRecord
from edgekit.segments.report import markdown
from edgekit.segments.split import Split, parse_segments, split
from edgekit.source import load_source
from edgekit.validate.metrics import OutputStats, output_stats
from edgekit.validate.validate import compare

Progress = Callable[[str], None]
CHAIN = "chain"  # the end-to-end row's name
DEFAULT_TIMING = Timing()


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class SegmentRow:
    index: int
    folder: str
    begins_at: str
    modules: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    flops: int
    validation: Validation  # the segment alone on its runtime, fed torch's values at its cuts


@dataclass(frozen=True)
class SegmentsResult:
    source: str
    folder: Path
    segments: tuple[SegmentRow, ...]
    tensors: tuple[CutTensor, ...]
    chain: Validation  # the segments chained on their runtimes against the original model, end to end
    cut_errors: tuple[OutputStats, ...]  # the chain's values at each cut against torch's: where error grows
    unsplit: tuple[Validation, ...]  # the unsplit model on each distinct target
    pipeline: PipelineBench | None
    validated_on: str = ""

    @property
    def failed(self) -> bool:
        from edgekit.validate.gates import Status

        return any(v.status is Status.FAIL for v in (self.chain, *self.unsplit, *(s.validation for s in self.segments)))


def _profiles(targets: str | list[TargetProfile]) -> list[TargetProfile]:
    """One profile per segment, in order; the same profile may serve several segments."""
    if not isinstance(targets, str):
        return list(targets)
    names = [n.strip() for n in targets.split(",") if n.strip()]
    if not names:
        raise EdgekitError("no target given: pass --target NAME[,NAME...], one per segment (see `edgekit profiles`)")
    return [load_profile(n) for n in names]


def _segment_count(wanted: int | tuple[str, ...]) -> int:
    return wanted if isinstance(wanted, int) else len(wanted) + 1


def _through(plan: Split, index: int, data: Dataset, what: str) -> Dataset:
    """``data`` (the model's inputs) carried through the segments before ``index`` in torch: segment
    ``index``'s inputs, with every value the earlier segments made."""
    values = dict(data.inputs)
    for segment in plan.segments[:index]:
        values.update(run_torch(segment.spec.module, values, segment.spec.input_names, segment.spec.output_names))
    inputs = plan.segments[index].spec.input_names
    origin = data.origin if index == 0 else f"{data.origin}, through segments 0..{index - 1} in torch"
    return replace(data, inputs={k: values[k] for k in inputs}, origin=f"{origin} ({what})")


def _segment_reference(plan: Split, index: int, reference: Reference, source: str) -> Reference:
    spec = plan.segments[index].spec
    values = dict(reference.inputs)
    for segment in plan.segments[:index + 1]:
        values.update(run_torch(segment.spec.module, values, segment.spec.input_names, segment.spec.output_names))
    logits = spec.output_names[0] == reference.logits  # task accuracy only where the class scores come out first
    origin = reference.origin if index == 0 else f"{reference.origin}, through segments 0..{index - 1} in torch"
    return Reference(f"{source} segment {index}", spec, spec.input_names, spec.output_names,
                     {k: values[k] for k in spec.input_names}, {k: values[k] for k in spec.output_names},
                     reference.labels if logits else None, reference.task if logits else None, origin, reference.real)


def _segment_profile(profile: TargetProfile, reference: Reference) -> TargetProfile:
    """A segment that does not make the class scores is gated on its outputs only: agreement of decisions and
    accuracy are the model's, judged end to end."""
    if reference.labels is not None:
        return profile
    return replace(profile, gates=replace(profile.gates, task={}))


def _record(source: str, spec, reference: Reference, targets: tuple[str, ...], torch_accuracy) -> RunRecord:
    return RunRecord(source, tuple(spec.input_names), tuple(spec.output_names), targets, task=reference.task,
                     attention_outputs=tuple(n for n in spec.attention_outputs if n in spec.output_names),
                     labels=tuple(spec.labels),
                     data={"origin": reference.origin, "samples": reference.samples, "real": reference.real,
                           "labels": reference.labels is not None},
                     preprocess=jsonable(spec.preprocess) if spec.preprocess is not None else None,
                     torch_accuracy=torch_accuracy)


def _write_run(folder: Path, reference: Reference, rows: list[Validation], record: RunRecord) -> RunResult:
    for row in rows:
        write_json(folder / row.target / VALIDATION_FILE, row)
    result = RunResult(record.source, folder, reference.accuracy(), tuple(rows), None, reference.describe())
    RunFolder(folder).write_record(record)
    write_reports(folder, result, reference, record)
    return result


def _chain_profile(plan: Split, profiles: list[TargetProfile], model_outputs: tuple[str, ...]) -> TargetProfile:
    """The end-to-end gates: each model output under the gates of the profile of the segment that makes it, the
    task gates of the one that makes the class scores."""
    maker = {name: profiles[plan.outputs[name]] for name in model_outputs}
    gates = Gates({name: p.gates.for_output(name) for name, p in maker.items()}, maker[model_outputs[0]].gates.task)
    backends = "+".join(dict.fromkeys(p.backend for p in profiles))
    return TargetProfile(CHAIN, backends, "+".join(dict.fromkeys(p.precision for p in profiles)),
                         " -> ".join(p.name for p in profiles), gates=gates)


def _chain_precision(folders: list[Path]) -> Precision:
    """What the chain runs in: every segment's precision, as its runtime reported it."""
    found = [read_manifest(f / MANIFEST_FILE).precision for f in folders]
    def join(values):
        return "+".join(dict.fromkeys(values))
    return Precision(join(p.declared for p in found), join(p.compute for p in found),
                     join(p.weights for p in found), {"segments": [jsonable(p) for p in found]},
                     tuple(w for p in found for w in p.warnings))


def validate_chain(run_dir: Path, plan: Split, profiles: list[TargetProfile], reference: Reference,
                   torch_values: dict[str, np.ndarray], timeout: float = 600.0
                   ) -> tuple[Validation, tuple[OutputStats, ...]]:
    """Run the reference inputs through every segment on its runtime, one after another, in a worker process:
    the model's outputs against torch's under the chain's gates, and the error at every cut tensor."""
    import tempfile

    from edgekit.isolation.process import run_worker
    from edgekit.segments.bench import WORKER
    from edgekit.segments.worker import ChainJob

    profile = _chain_profile(plan, profiles, reference.output_names)
    folders = [run_dir / f"segment{s.index}" / p.name for s, p in zip(plan.segments, profiles)]
    precision = _chain_precision(folders)
    with tempfile.TemporaryDirectory(prefix="edgekit-chain-") as scratch:
        outcome = run_worker(ChainJob("chain", str(run_dir.resolve()), scratch), timeout, module=WORKER)
    if outcome.stage is not None:
        return failure(profile, outcome.stage, outcome.reason, precision), ()
    values = outcome.validation_outputs()
    cuts = tuple(output_stats(t.name, torch_values[t.name], values[t.name]) for t in plan.tensors
                 if t.produced_by >= 0 and t.name in values and t.name not in reference.output_names)
    actual = {k: values[k] for k in reference.output_names if k in values}
    return compare(reference, actual, precision, profile), cuts


def _checked_request(segments: str | int | tuple[str, ...], targets: str | list[TargetProfile]
                     ) -> tuple[int | tuple[str, ...], str, list[TargetProfile]]:
    """The segments asked for, their label as given, and one profile per segment with its options checked; bad
    input raises here, before anything is loaded or written."""
    wanted = segments if isinstance(segments, (int, tuple)) else parse_segments(str(segments))
    if isinstance(wanted, int) and wanted < 2:
        raise EdgekitError(f"--segments {wanted}: a split needs at least 2 segments")
    profiles = _profiles(targets)
    label = segments if isinstance(segments, str) else ",".join(wanted) if isinstance(wanted, tuple) else str(wanted)
    if len(profiles) != _segment_count(wanted):
        raise EdgekitError(f"--segments {label} makes {_segment_count(wanted)} segments but --target names "
                           f"{len(profiles)} target(s): give one per segment, in order")
    for profile in profiles:
        check_options(profile)
    return wanted, label, profiles


def _export_unsplit(stage: Path, source: str, spec, reference: Reference, profiles: list[TargetProfile],
                    calibration: dict[str, CalibrationData], progress: Progress) -> list[Validation]:
    """The unsplit model exported to each of ``profiles``: the pipeline's baseline, an ordinary run in ``stage``."""
    baseline = []
    for profile in profiles:
        progress(f"unsplit model: {profile.name}")
        baseline.append(export_target(reference, profile, stage / profile.name, calibration.get(profile.name),
                                       lambda m: progress(f"unsplit model: {m}")))
    _write_run(stage, reference, baseline, _record(source, spec, reference, tuple(v.target for v in baseline),
                                                   reference.accuracy()))
    return baseline


def _export_segment(stage: Path, plan: Split, index: int, profile: TargetProfile, ref: Reference,
                    calibration: dict[str, CalibrationData], progress: Progress) -> SegmentRow:
    """Segment ``index`` exported to ``profile`` and validated alone: an ordinary run folder ``segmentN/``, whose
    reference data (and calibration data) are torch's values at its cuts."""
    segment = plan.segments[index]
    folder = stage / f"segment{index}"
    folder.mkdir()
    save_reference(ref, folder / REFERENCE_FILE)
    calib_data: CalibrationData | None = None
    if profile.name in calibration:
        calib_data = _through(plan, index, calibration[profile.name], "calibration")
    row = export_target(ref, _segment_profile(profile, ref), folder / profile.name, calib_data,
                        lambda m: progress(f"segment {index}: {m}"))
    _write_run(folder, ref, [row], _record(ref.source, segment.spec, ref, (profile.name,), ref.accuracy()))
    return SegmentRow(index, folder.name, segment.begins_at, segment.modules, segment.spec.input_names,
                      segment.spec.output_names, segment.flops, row)


def _chain_validation(stage: Path, plan: Split, profiles: list[TargetProfile], reference: Reference,
                      rows: list[SegmentRow], torch_values: dict[str, np.ndarray], progress: Progress
                      ) -> tuple[Validation, tuple[OutputStats, ...]]:
    """The chain validated end to end, or, when a segment has no artifact, the chain's failure naming it."""
    broken = next((r for r in rows if r.validation.stage in (Stage.EXPORT, Stage.QUANTIZE)), None)
    if broken is not None:
        return failure(_chain_profile(plan, profiles, reference.output_names), broken.validation.stage,
                       f"segment {broken.index} ({broken.validation.target}) has no artifact: "
                       f"{broken.validation.reason}"), ()
    progress(f"chain: validating the {len(rows)} segments end to end on {reference.samples} samples")
    return validate_chain(stage, plan, profiles, reference, torch_values)


def export_segments(source: str, segments: str | int | tuple[str, ...], targets: str | list[TargetProfile],
                    out: str | Path, *, calib: str | Path | None = None, data: str | Path | None = None,
                    preprocess: str | None = None, allow_pickle: bool = False, unsplit: bool = True,
                    timing: Timing | None = DEFAULT_TIMING, progress: Progress = _quiet) -> SegmentsResult:
    """Split ``source`` into segments (``segments``: a count, cuts balanced by FLOPs among its top-level module
    boundaries, or the modules each later segment begins at), export segment i to the i-th of ``targets``,
    validate each segment and the whole chain against torch on real data, and bench the chain as a pipeline
    against the unsplit model exported to the same targets (``unsplit=False``: no baseline; ``timing=None``: no
    bench). Bad input raises EdgekitError before anything is written; a failing segment becomes a row."""
    wanted, label, profiles = _checked_request(segments, targets)
    progress(f"loading {source}")
    spec = load_source(source, allow_pickle=allow_pickle, preprocess=preprocess)
    distinct = list({p.name: p for p in profiles}.values())
    calibration = calibration_for(spec, distinct, calib)
    validation = None
    if data is not None:
        validation = load_data(data, InputInfo.of(spec), "--data", max(p.validation_samples for p in profiles))
    progress(f"splitting into {_segment_count(wanted)} segments")
    plan = split(spec, wanted, source)
    reference = build_reference(spec, source, validation)
    references = [_segment_reference(plan, s.index, reference, source) for s in plan.segments]
    torch_values = {k: v for r in references for k, v in r.outputs.items()}
    with staged_folder(Path(out)) as stage:
        save_reference(reference, stage / REFERENCE_FILE)
        baseline = _export_unsplit(stage, source, spec, reference, distinct if unsplit else [], calibration,
                                   progress)
        rows = [_export_segment(stage, plan, segment.index, profile, ref, calibration, progress)
                for segment, profile, ref in zip(plan.segments, profiles, references)]
        record = SegmentsRecord(source, label, tuple(
            StageRecord(r.folder, p.name, r.begins_at, r.modules, r.inputs, r.outputs, plan.dropped(r.index),
                        plan.carried(r.index), r.flops) for r, p in zip(rows, profiles)),
            tuple(spec.input_names), tuple(spec.output_names), plan.tensors,
            tuple(v.target for v in baseline if v.stage not in (Stage.EXPORT, Stage.QUANTIZE)))
        record.write(stage)
        chain, cuts = _chain_validation(stage, plan, profiles, reference, rows, torch_values, progress)
        record.write(stage, validation=chain, cut_errors=cuts)
        pipeline, raw = None, None
        if timing is not None and chain.stage in (None, Stage.MISMATCH):  # it ran, whatever the gates said
            progress("pipeline: benching the segments as a pipeline against the unsplit model")
            pipeline, raw = measure_pipeline(stage, timing)
        record.write(stage, validation=chain, cut_errors=cuts, pipeline=raw)
        result = SegmentsResult(source, Path(out), tuple(rows), plan.tensors, chain, cuts, tuple(baseline), pipeline,
                                reference.describe())
        write_text(stage / "segments.md", markdown(result))
    return result
