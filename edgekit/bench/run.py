"""``edgekit bench RUN_DIR``: every artifact of a run on its own runtime, each in a worker process, against the
original torch model (a row too): speed, size, memory, accuracy on real data, attention and occlusion agreement."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.artifact import Precision, read_manifest
from edgekit.bench.isolate import Outcome, run_worker
from edgekit.bench.measurement import Measurement
from edgekit.bench.worker import Job
from edgekit.config import Gates, TargetProfile, Threshold
from edgekit.reference import Reference, load_reference
from edgekit.report.attention import HeadStats, attention_stats
from edgekit.report.explain import (
    MapAgreement,
    OcclusionPlan,
    agreement,
    occlusion_inputs,
    occlusion_maps,
    predicted_classes,
)
from edgekit.runfolder import earlier_failure, read_run, target_profile
from edgekit.validate.gates import Status
from edgekit.validate.validate import Stage, Validation, compare, failure

TORCH_ROW = "torch"
RowProgress = Callable[[int, int, str], None]  # (done, total, what is running now)


@dataclass(frozen=True)
class Timing:
    """How long each row is timed; ``quick`` is for demos and tests, the default for numbers you quote."""

    min_runs: int = 200
    min_seconds: float = 1.0
    throughput_seconds: float = 2.0
    timeout: float = 300.0

    @staticmethod
    def quick() -> Timing:
        return Timing(min_runs=50, min_seconds=0.2, throughput_seconds=0.3, timeout=120.0)


@dataclass(frozen=True)
class BenchRow:
    validation: Validation
    measurement: Measurement | None = None
    attention: tuple[HeadStats, ...] = ()
    occlusion: MapAgreement | None = None
    seconds: float = 0.0

    @property
    def target(self) -> str:
        return self.validation.target


@dataclass(frozen=True)
class Explanation:
    """The maps behind the occlusion columns (arrays: plotted, not written to report.json)."""

    plan: OcclusionPlan
    classes: np.ndarray  # torch's predicted class per sample
    images: np.ndarray  # [samples, C, H, W]
    torch_maps: np.ndarray
    maps: dict[str, np.ndarray]  # target -> [samples, gh, gw]
    saliency: np.ndarray | None  # [samples, H, W] from torch gradients
    saliency_vs_occlusion: float | None  # Spearman's rho, torch saliency pooled to the grid vs torch occlusion


@dataclass(frozen=True)
class BenchResult:
    source: str
    folder: Path
    task: str | None
    torch_accuracy: float | None
    torch: BenchRow | None
    rows: tuple[BenchRow, ...]
    attention_outputs: tuple[str, ...] = ()
    explanation: Explanation | None = None
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # target -> val outputs, for plots
    reference: Reference | None = None
    timing: Timing | None = None

    @property
    def failed(self) -> bool:
        return any(r.validation.status is Status.FAIL for r in self.rows)


def _val(outcome: Outcome) -> dict[str, np.ndarray]:
    return {k[4:]: v for k, v in outcome.outputs.items() if k.startswith("val:")}


def _row(outcome: Outcome, reference: Reference, profile: TargetProfile, precision: Precision,
         attention: tuple[str, ...]) -> BenchRow:
    if outcome.stage is not None:
        return BenchRow(failure(profile, Stage(outcome.stage), outcome.reason, precision), seconds=outcome.seconds)
    actual = _val(outcome)
    validation = compare(reference, actual, precision, profile)
    heads = tuple(h for name in attention if name in actual and actual[name].shape == reference.outputs[name].shape
                  for h in attention_stats(name, reference.outputs[name], actual[name]))
    return BenchRow(validation, outcome.measurement, heads, seconds=outcome.seconds)


def validate_in_worker(reference: Reference, run_dir: Path, target: str, precision: Precision,
                       profile: TargetProfile, timeout: float = 600.0) -> Validation:
    """Validate one artifact of a run folder in a worker process: a runtime that aborts or hangs while loading or
    running becomes a CRASH / TIMEOUT row instead of taking the caller down."""
    with tempfile.TemporaryDirectory(prefix="edgekit-validate-") as scratch:
        job = Job("artifact", str(run_dir.resolve()), target, scratch, measure=False)
        outcome = run_worker(job, timeout)
    if outcome.stage is not None:
        return failure(profile, Stage(outcome.stage), outcome.reason, precision)
    return compare(reference, _val(outcome), precision, profile)


# the torch row runs the very model the reference came from: anything but float noise is a bug
TORCH_PROFILE = TargetProfile(TORCH_ROW, "torch", "fp32", "the original torch eager model",
                              gates=Gates({"*": {"max_abs_error": Threshold(1e-5, 1e-4)}}))
TORCH_PRECISION = Precision("fp32", "float32", "float32")
# after compression the reference is the compressed model: the original differs by design, only its accuracy and
# speed are the baseline
TORCH_ORIGINAL_PROFILE = TargetProfile(TORCH_ROW, "torch", "fp32", "the original torch eager model, before compression")


def bench(run_dir: str | Path, *, timing: Timing | None = None, explain: bool = True, torch_row: bool = True,
          allow_pickle: bool = False, on_row: RowProgress | None = None) -> BenchResult:
    """Bench every artifact of a run folder; writes report.json, report.md, report.html and junit.xml into it."""
    from edgekit.report.render import write_bench_reports

    folder = Path(run_dir)
    run = read_run(folder)
    timing = timing or Timing()
    reference = load_reference(folder / "reference.npz", run["source"], tuple(run["inputs"]),
                               tuple(run["outputs"]), run.get("task"), run.get("data"))
    attention = tuple(run.get("attention_outputs", ()))
    targets = list(run["targets"])
    total = len(targets) + (1 if torch_row else 0)
    occlusion = occlusion_inputs(reference.inputs, reference.labels) if explain else None
    outputs: dict[str, dict[str, np.ndarray]] = {}
    explain_logits: dict[str, np.ndarray] = {}
    rows = []
    torch = None
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as scratch:
        explain_path = ""
        if occlusion is not None:
            explain_path = os.path.join(scratch, "explain_inputs.npz")
            np.savez(explain_path, **occlusion[0])

        def job(kind: str, target: str) -> Job:
            return Job(kind, str(folder.resolve()), target, os.path.join(scratch, target), timing.min_runs,
                       timing.min_seconds, timing.throughput_seconds, run["source"], allow_pickle, explain_path)

        def measured(kind: str, name: str, profile: TargetProfile, precision: Precision,
                     attention_names: tuple[str, ...]) -> BenchRow:
            outcome = run_worker(job(kind, name), timing.timeout)
            outputs[name] = _val(outcome)
            logits = outcome.outputs.get(f"explain:{reference.logits}")
            if logits is not None:
                explain_logits[name] = logits
            return _row(outcome, reference, profile, precision, attention_names)

        done = 0
        if torch_row:
            if on_row:
                on_row(done, total, f"{TORCH_ROW}: original model, eager")
            compressed = (folder / "compression.json").is_file()
            torch = measured("torch", TORCH_ROW, TORCH_ORIGINAL_PROFILE if compressed else TORCH_PROFILE,
                             TORCH_PRECISION, ())
            if compressed:
                torch = replace(torch, validation=replace(torch.validation, warnings=(
                    "the original model before compression: outputs differ from the compressed reference",)))
            done += 1
        for name in targets:
            if on_row:
                on_row(done, total, name)
            target_dir = folder / name
            profile = target_profile(target_dir)
            if (target_dir / "manifest.json").is_file():
                precision = read_manifest(target_dir / "manifest.json").precision
                rows.append(measured("artifact", name, profile, precision, attention))
            else:
                rows.append(BenchRow(earlier_failure(target_dir, profile)))
            done += 1
        if on_row:
            on_row(done, total, "writing the reports")
    explanation = None
    if occlusion is not None and TORCH_ROW in explain_logits:
        explanation = _explanation(occlusion[1], reference, explain_logits, run["source"], allow_pickle)
        rows = [replace(r, occlusion=agreement(explanation.torch_maps, explanation.maps[r.target]))
                if r.target in explanation.maps else r for r in rows]
    result = BenchResult(run["source"], folder, run.get("task"), reference.accuracy(), torch, tuple(rows),
                         attention, explanation, outputs, reference, timing)
    write_bench_reports(result)
    return result


def _explanation(plan: OcclusionPlan, reference: Reference, logits: dict[str, np.ndarray], source: str,
                 allow_pickle: bool) -> Explanation:
    from edgekit.report.explain import gradient_saliency, pool_to_grid, rank_correlation
    from edgekit.source import load_source

    classes = predicted_classes(logits[TORCH_ROW], plan)
    maps = {name: occlusion_maps(value, plan, classes) for name, value in logits.items()
            if value.shape == logits[TORCH_ROW].shape}  # a MISMATCH row's outputs are not comparable
    torch_maps = maps.pop(TORCH_ROW)
    saliency, rho = None, None
    try:  # the saliency is context for the maps; a model that will not differentiate still gets its maps
        spec = load_source(source, allow_pickle=allow_pickle)
        saliency = gradient_saliency(spec.module, reference.inputs, reference.input_names, plan, classes)
        rho = float(np.mean([rank_correlation(pool_to_grid(saliency, plan)[i], torch_maps[i])
                             for i in range(len(classes))]))
    except Exception:
        pass
    images = reference.inputs[plan.image_input][list(plan.samples)]
    return Explanation(plan, classes, images, torch_maps, maps, saliency, rho)
