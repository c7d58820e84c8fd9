"""Validate one artifact against the Reference: output names, then shapes, then values; every failure collected."""
from __future__ import annotations

import numpy as np

from edgekit.artifact import Precision
from edgekit.config import TargetProfile, Threshold
from edgekit.lengths import AT
from edgekit.reference import Reference, task_accuracy
from edgekit.results import Stage, Validation, failure
from edgekit.validate.gates import Check, Status, check, worst
from edgekit.validate.metrics import OutputStats, output_stats

# agreement of decisions means something on real data only; on two example inputs it can only be 0, 0.5 or 1
NEEDS_REAL_DATA = {"top1_agreement", "accuracy_drop"}


def _gate(reference: Reference, stats: list[OutputStats], accuracy: float | None,
          profile: TargetProfile) -> list[Check]:
    checks = []
    for s in stats:
        if s.nonfinite:  # whatever the profile gates: NaN / Inf where torch is finite is wrong
            checks.append(check(s.name, "NaN/Inf values", s.nonfinite, Threshold(0, 0)))
        for metric, gate in profile.gates.for_output(s.name).items():
            value = s.metric(metric)
            if value is not None and (reference.real or metric not in NEEDS_REAL_DATA):
                checks.append(check(s.name, metric, value, gate))
    if not reference.real:  # the task gates are skipped, not faked; every report says why
        return checks
    torch_acc = reference.accuracy()
    logits = next((s for s in stats if s.name == reference.logits), None)
    task_values = {"accuracy_drop": None if accuracy is None or torch_acc is None else 100 * (torch_acc - accuracy),
                   "top1_agreement": logits.top1_agreement if logits else None}
    for metric, gate in profile.gates.task.items():
        if task_values.get(metric) is not None:
            checks.append(check("task", metric, task_values[metric], gate))
    return checks


def compare(reference: Reference, actual: dict[str, np.ndarray], precision: Precision,
            profile: TargetProfile) -> Validation:
    """The artifact's outputs on the reference inputs against torch's: names, shapes, values, then the gates."""
    expected = dict(reference.outputs)
    for length, (_, outputs) in reference.at_lengths.items():
        expected.update({f"{k}{AT}{length}": v for k, v in outputs.items()})
    problems = []
    missing = [n for n in expected if n not in actual]
    if missing:
        problems.append(f"missing output(s) {', '.join(missing)} (artifact has {', '.join(actual)})")
    for name, want in expected.items():
        if name in actual and actual[name].shape != want.shape:
            problems.append(f"output {name} has shape {actual[name].shape}, torch {want.shape}")
    if problems:
        return failure(profile, Stage.MISMATCH, "; ".join(problems), precision)
    stats = [output_stats(n, want, actual[n]) for n, want in expected.items()]
    accuracy = task_accuracy(actual[reference.logits], reference.labels)
    checks = _gate(reference, stats, accuracy, profile)
    status = worst(c.status for c in checks)
    if precision.warnings and status is Status.PASS:
        status = Status.WARN
    reason = "; ".join(f"{c.subject} {c.metric} {c.value:.3g} beyond {c.fail:g}" for c in checks
                       if c.status is Status.FAIL)
    return Validation(profile.name, profile.backend, status, Stage.MISMATCH if reason else None, reason,
                      len(reference.labels) if reference.labels is not None else len(next(iter(actual.values()))),
                      tuple(stats), reference.accuracy(), accuracy, tuple(checks), precision,
                      precision.warnings)

