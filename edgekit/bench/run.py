"""``edgekit bench RUN_DIR``: every artifact of a run on its own runtime, each in a worker process, against the
original torch model (a row too): speed, size, memory, accuracy on real data, attention and occlusion agreement."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit.artifact import Precision, read_manifest
from edgekit.config import Gates, TargetProfile, Threshold
from edgekit.isolation.process import Outcome, run_worker
from edgekit.isolation.worker import Job
from edgekit.reference import Reference
from edgekit.report.render import write_bench_reports
from edgekit.results import BenchResult, BenchRow, Explanation, Timing
from edgekit.runfolder import MANIFEST_FILE, RunFolder
from edgekit.validate.attention import attention_stats
from edgekit.validate.explain import (
    OcclusionPlan,
    agreement,
    occlusion_inputs,
    occlusion_maps,
    predicted_classes,
)
from edgekit.validate.validate import compare, failure

__all__ = ["BenchResult", "BenchRow", "Timing", "bench"]  # the types live in edgekit.results

TORCH_ROW = "torch"
RowProgress = Callable[[int, int, str], None]  # (done, total, what is running now)


def _row(outcome: Outcome, reference: Reference, profile: TargetProfile, precision: Precision,
         attention: tuple[str, ...]) -> BenchRow:
    if outcome.stage is not None:
        return BenchRow(failure(profile, outcome.stage, outcome.reason, precision), seconds=outcome.seconds)
    actual = outcome.validation_outputs()
    validation = compare(reference, actual, precision, profile)
    heads = tuple(h for name in attention if name in actual and actual[name].shape == reference.outputs[name].shape
                  for h in attention_stats(name, reference.outputs[name], actual[name]))
    return BenchRow(validation, outcome.measurement, heads, seconds=outcome.seconds)


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
    run_folder = RunFolder(run_dir)
    folder, record = run_folder.path, run_folder.record()
    timing = timing or Timing()
    reference = run_folder.reference(record)
    attention = record.attention_outputs
    targets = list(record.targets)
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
                       timing.min_seconds, timing.throughput_seconds, record.source, allow_pickle, explain_path)

        def measured(kind: str, name: str, profile: TargetProfile, precision: Precision,
                     attention_names: tuple[str, ...]) -> BenchRow:
            outcome = run_worker(job(kind, name), timing.timeout)
            outputs[name] = outcome.validation_outputs()
            logits = outcome.outputs.get(f"explain:{reference.logits}")
            if logits is not None:
                explain_logits[name] = logits
            return _row(outcome, reference, profile, precision, attention_names)

        done = 0
        if torch_row:
            if on_row:
                on_row(done, total, f"{TORCH_ROW}: original model, eager")
            compressed = run_folder.compression() is not None
            torch = measured("torch", TORCH_ROW, TORCH_ORIGINAL_PROFILE if compressed else TORCH_PROFILE,
                             TORCH_PRECISION, ())
            if compressed:
                torch = replace(torch, validation=replace(torch.validation, warnings=(
                    "the original model before compression: outputs differ from the compressed reference",)))
            done += 1
        for name in targets:
            if on_row:
                on_row(done, total, name)
            profile = run_folder.profile(name)
            if run_folder.has_manifest(name):
                precision = read_manifest(run_folder.target(name) / MANIFEST_FILE).precision
                rows.append(measured("artifact", name, profile, precision, attention))
            else:
                rows.append(BenchRow(run_folder.earlier_failure(name, profile)))
            done += 1
        if on_row:
            on_row(done, total, "writing the reports")
    explanation = None
    if occlusion is not None and TORCH_ROW in explain_logits:
        explanation = _explanation(occlusion[1], reference, explain_logits, record.source, allow_pickle)
        rows = [replace(r, occlusion=agreement(explanation.torch_maps, explanation.maps[r.target]))
                if r.target in explanation.maps else r for r in rows]
    result = BenchResult(record.source, folder, record.task, reference.accuracy(), torch, tuple(rows),
                         attention, explanation, outputs, reference, timing)
    write_bench_reports(result)
    return result


def _explanation(plan: OcclusionPlan, reference: Reference, logits: dict[str, np.ndarray], source: str,
                 allow_pickle: bool) -> Explanation:
    from edgekit.source import load_source
    from edgekit.validate.explain import (
        gradient_saliency,
        pool_to_grid,
        rank_correlation,
    )

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
