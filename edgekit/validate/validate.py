"""Validate one artifact against the Reference: output names, then shapes, then values; every failure collected."""
from __future__ import annotations

from dataclasses import replace

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


def _check(subject: str, stats: OutputStats, metric: str, gate: Threshold, near_tie: float) -> Check | None:
    """One gate on one output. Top-1 agreement is judged with the near-tie flips forgiven (the reports still show
    the plain agreement and every flip with its lead)."""
    if metric != "top1_agreement":
        value = stats.metric(metric)
        return None if value is None else check(subject, metric, value, gate)
    value = stats.agreement_beyond_ties(near_tie)
    if value is None:
        return None
    forgiven = len(stats.flip_leads) - stats.confident_flips(near_tie)
    note = f"{forgiven} near-tie flip(s) forgiven" if forgiven else ""
    return replace(check(subject, metric, value, gate), note=note)


def _labels_decide(checks: list[Check]) -> list[Check]:
    """With labels and an accuracy_drop gate the task's accuracy decides: agreement with torch only warns."""
    if not any(c.subject == "task" and c.metric == "accuracy_drop" for c in checks):
        return checks
    return [replace(c, status=Status.WARN, note="; ".join(filter(None, [c.note, "labels decide (accuracy_drop)"])))
            if c.metric == "top1_agreement" and c.status is Status.FAIL else c for c in checks]


def _gate(reference: Reference, stats: list[OutputStats], accuracy: float | None,
          profile: TargetProfile) -> list[Check]:
    gates, checks = profile.gates, []
    for s in stats:
        if s.nonfinite:  # whatever the profile gates: NaN / Inf where torch is finite is wrong
            checks.append(check(s.name, "NaN/Inf values", s.nonfinite, Threshold(0, 0)))
        for metric, gate in gates.for_output(s.name).items():
            if reference.real or metric not in NEEDS_REAL_DATA:
                checks.append(_check(s.name, s, metric, gate, gates.near_tie))
    if not reference.real:  # the task gates are skipped, not faked; every report says why
        return [c for c in checks if c is not None]
    torch_acc = reference.accuracy()
    logits = next((s for s in stats if s.name == reference.logits), None)
    for metric, gate in gates.task.items():
        if metric == "accuracy_drop" and accuracy is not None and torch_acc is not None:
            # rounded: one sample of 200 is 0.5 points, not 0.5000000000000004 (which failed a 0.5 gate on Zen 4)
            checks.append(check("task", metric, round(100 * (torch_acc - accuracy), 9), gate))
        elif metric == "top1_agreement" and logits is not None:
            checks.append(_check("task", logits, metric, gate, gates.near_tie))
    return _labels_decide([c for c in checks if c is not None])


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
    reason = "; ".join(f"{c.subject} {c.metric} {c.value:.3g} beyond {c.fail:g}" + (f" ({c.note})" if c.note else "")
                       for c in checks if c.status is Status.FAIL)
    return Validation(profile.name, profile.backend, status, Stage.MISMATCH if reason else None, reason,
                      len(reference.labels) if reference.labels is not None else len(next(iter(actual.values()))),
                      tuple(stats), reference.accuracy(), accuracy, tuple(checks), precision,
                      precision.warnings)

