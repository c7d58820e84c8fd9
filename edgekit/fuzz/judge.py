"""The fuzzer's independent check: a target that passed its gates is opened again, run on fresh inputs and judged
by a plain numpy criterion that shares nothing with edgekit's gates; one outcome per target."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import read_manifest
from edgekit.backends import get_backend
from edgekit.backends.execute import run_batched

OUTCOMES = ("PASS", "WARN", "EXPORT", "QUANTIZE", "LOAD", "RUN", "MISMATCH", "CRASH", "TIMEOUT", "SILENT")
FP32_TOLERANCE = 1e-3  # max abs error <= this * max(1, max |torch|)
INT8_COSINE = 0.95


@dataclass(frozen=True)
class Outcome:
    outcome: str  # one of OUTCOMES
    reason: str = ""
    check: dict[str, Any] = field(default_factory=dict)  # the independent check's numbers, when it ran


def independent_check(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], precision: str
                      ) -> tuple[str | None, dict[str, Any]]:
    """What is wrong with ``actual`` against torch's ``expected`` by a plain criterion that shares nothing with
    edgekit's gates (fp32: max abs error <= 1e-3 * max(1, max |torch|); int8: cosine >= 0.95; never NaN / Inf),
    or None; and the numbers it looked at."""
    problems, stats = [], {}
    for (name, ref), got in zip(expected.items(), actual.values()):
        got = np.asarray(got)
        if got.shape != ref.shape:
            problems.append(f"{name}: shape {got.shape}, torch {ref.shape}")
            continue
        nonfinite = int((~np.isfinite(got)).sum())
        ref64, got64 = ref.astype(np.float64).ravel(), np.nan_to_num(got.astype(np.float64).ravel())
        max_abs = float(np.abs(ref64 - got64).max(initial=0.0))
        norms = np.linalg.norm(ref64) * np.linalg.norm(got64)
        cosine = float(ref64 @ got64 / norms) if norms > 0 else float(np.array_equal(ref64, got64))
        tolerance = FP32_TOLERANCE * max(1.0, float(np.abs(ref64).max(initial=0.0)))
        stats[name] = {"max_abs": max_abs, "tolerance": tolerance, "cosine": cosine, "nonfinite": nonfinite}
        if nonfinite:
            problems.append(f"{name}: {nonfinite} NaN/Inf values")
        elif precision.startswith("int8") and cosine < INT8_COSINE:
            problems.append(f"{name}: cosine {cosine:.4f} < {INT8_COSINE}")
        elif not precision.startswith("int8") and max_abs > tolerance:
            problems.append(f"{name}: max abs error {max_abs:.3g} > {tolerance:.3g}")
    if len(actual) != len(expected):
        problems.append(f"{len(actual)} outputs, torch has {len(expected)}")
    return ("; ".join(problems) or None), stats


def classify(row, expected: dict[str, np.ndarray] | None, actual: dict[str, np.ndarray] | None,
             precision: str, check_error: str = "") -> Outcome:
    """One target's outcome from edgekit's row (an edgekit.results.Validation) and, for a row that passed, the
    artifact's outputs on fresh inputs against torch's."""
    if row.stage is not None:
        return Outcome(row.stage.value, row.reason)
    if row.status.value == "FAIL":  # a gate failure without a stage is still a mismatch edgekit caught
        return Outcome("MISMATCH", row.reason)
    if check_error:
        return Outcome("SILENT", f"passed its gates, but fresh inputs do not run: {check_error}")
    problem, stats = independent_check(expected, actual, precision)
    if problem:
        return Outcome("SILENT", f"passed its gates ({row.status.value}), but on fresh inputs {problem}", stats)
    return Outcome(row.status.value, row.reason, stats)


def run_artifact(folder: Path, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """The artifact in ``folder`` opened here, through its backend, on ``inputs``; and its declared precision."""
    manifest = read_manifest(folder / "manifest.json")
    session = get_backend(manifest.backend).open(folder, manifest)
    return run_batched(session, manifest, inputs), manifest.precision.declared


def judge(row, folder: Path, fresh: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> Outcome:
    if row.stage is not None or row.status.value == "FAIL":
        return classify(row, None, None, "")
    try:
        actual, precision = run_artifact(folder, fresh)
    except Exception as exc:  # the artifact passed on edgekit's inputs; failing on ours is silent breakage
        return classify(row, None, None, "", check_error=f"{type(exc).__name__}: {exc}"[:300])
    return classify(row, expected, actual, precision)
