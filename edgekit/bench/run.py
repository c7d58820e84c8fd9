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
from edgekit.fsutil import folder_lock
from edgekit.isolation.process import Outcome, run_worker
from edgekit.isolation.worker import Job
from edgekit.reference import Reference, load_run_reference
from edgekit.report.render import write_bench_reports
from edgekit.results import BenchResult, BenchRow, Explanation, Timing
from edgekit.runfolder import MANIFEST_FILE, RunFolder, RunRecord
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


class _Worker:
    """Runs one row in a worker process, and keeps what the report needs beside the row: each row's validation
    outputs and the logits of its occlusion inputs."""

    def __init__(self, run_folder: RunFolder, record: RunRecord, reference: Reference, timing: Timing,
                 allow_pickle: bool, scratch: str, explain_path: str):
        self.run_folder, self.record, self.reference, self.timing = run_folder, record, reference, timing
        self.allow_pickle, self.scratch, self.explain_path = allow_pickle, scratch, explain_path
        self.outputs: dict[str, dict[str, np.ndarray]] = {}
        self.explain_logits: dict[str, np.ndarray] = {}

    def row(self, kind: str, name: str, profile: TargetProfile, precision: Precision,
            attention: tuple[str, ...]) -> BenchRow:
        timing = self.timing
        job = Job(kind, str(self.run_folder.path.resolve()), name, os.path.join(self.scratch, name),
                  timing.min_runs, timing.min_seconds, timing.throughput_seconds,
                  allow_pickle=self.allow_pickle, explain=self.explain_path, memory_mb=profile.limits.memory_mb)
        outcome = run_worker(job, timing.timeout or profile.limits.bench)
        self.outputs[name] = outcome.validation_outputs()
        logits = outcome.outputs.get(f"explain:{self.reference.logits}")
        if logits is not None:
            self.explain_logits[name] = logits
        return _row(outcome, self.reference, profile, precision, attention)

    def torch_row(self) -> BenchRow:
        """The original torch model, eager; after compression it is the baseline, not the reference."""
        compressed = self.run_folder.compression() is not None
        torch = self.row("torch", TORCH_ROW, TORCH_ORIGINAL_PROFILE if compressed else TORCH_PROFILE,
                         TORCH_PRECISION, ())
        if compressed:
            torch = replace(torch, validation=replace(torch.validation, warnings=(
                "the original model before compression: outputs differ from the compressed reference",)))
        return torch

    def target_row(self, name: str) -> BenchRow:
        """One target's artifact on its runtime, or the failure that left it without one."""
        profile = self.run_folder.profile(name)
        if not self.run_folder.has_manifest(name):
            return BenchRow(self.run_folder.earlier_failure(name, profile))
        precision = read_manifest(self.run_folder.target(name) / MANIFEST_FILE).precision
        return self.row("artifact", name, profile, precision, self.record.attention_outputs)


def bench(run_dir: str | Path, *, timing: Timing | None = None, explain: bool = True, torch_row: bool = True,
          allow_pickle: bool = False, on_row: RowProgress | None = None) -> BenchResult:
    """Bench every artifact of a run folder; writes report.json, report.md, report.html and junit.xml into it."""
    run_folder = RunFolder(run_dir)
    run_folder.record()  # not a run folder: one line, before a lock file is made beside it
    with folder_lock(Path(run_dir), "bench"):
        return _bench(run_folder, timing, explain, torch_row, allow_pickle, on_row)


def _bench(run_folder: RunFolder, timing: Timing | None, explain: bool, torch_row: bool, allow_pickle: bool,
           on_row: RowProgress | None) -> BenchResult:
    folder, record = run_folder.path, run_folder.record()
    timing = timing or Timing()
    reference = load_run_reference(run_folder, record)
    attention = record.attention_outputs
    targets = list(record.targets)
    total = len(targets) + (1 if torch_row else 0)
    occlusion = occlusion_inputs(reference.inputs, reference.labels) if explain else None
    rows = []
    torch = None
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as scratch:
        explain_path = ""
        if occlusion is not None:
            explain_path = os.path.join(scratch, "explain_inputs.npz")
            np.savez(explain_path, **occlusion[0])
        worker = _Worker(run_folder, record, reference, timing, allow_pickle, scratch, explain_path)
        done = 0
        if torch_row:
            if on_row:
                on_row(done, total, f"{TORCH_ROW}: original model, eager")
            torch = worker.torch_row()
            done += 1
        for name in targets:
            if on_row:
                on_row(done, total, name)
            rows.append(worker.target_row(name))
            done += 1
        if on_row:
            on_row(done, total, "writing the reports")
    explanation = None
    if occlusion is not None and TORCH_ROW in worker.explain_logits:
        explanation = _explanation(occlusion[1], reference, worker.explain_logits, record, allow_pickle)
        rows = [replace(r, occlusion=agreement(explanation.torch_maps, explanation.maps[r.target]))
                if r.target in explanation.maps else r for r in rows]
    result = BenchResult(record.source, folder, record.task, reference.accuracy(), torch, tuple(rows),
                         attention, explanation, worker.outputs, reference, timing)
    write_bench_reports(result)
    return result


def _explanation(plan: OcclusionPlan, reference: Reference, logits: dict[str, np.ndarray], record: RunRecord,
                 allow_pickle: bool) -> Explanation:
    from edgekit.source import load_recorded
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
        spec = load_recorded(record, allow_pickle=allow_pickle)
        saliency = gradient_saliency(spec.module, reference.inputs, reference.input_names, plan, classes)
        rho = float(np.mean([rank_correlation(pool_to_grid(saliency, plan)[i], torch_maps[i])
                             for i in range(len(classes))]))
    except Exception:
        pass
    images = reference.inputs[plan.image_input][list(plan.samples)]
    return Explanation(plan, classes, images, torch_maps, maps, saliency, rho)
